"""Which tokens of a text drive a unit (or an output logit): integrated gradients on the token embeddings.

Captum's ``LayerIntegratedGradients`` integrates the gradient of the target along the straight path from a baseline
embedding (every text token replaced by the padding id; ``[CLS]``/``[SEP]`` and ``char_rnn``'s start padding kept)
to the text's own embeddings, and sums over the embedding dimension: one number per token, whose sum approximates
``target(text) - target(baseline)`` (the completeness ``delta`` reported says how closely).

Memory stays bounded on long texts: the attribution covers a window of at most :data:`WINDOW_TOKENS` tokens that
ends at the target. For a recurrent model the text before the window is read first (in chunks, no gradients) and
its state held fixed, so the target's value is the one on the whole text; a transformer's window is the one its
activations were read in. ``TokenAttribution.window`` says which tokens were attributed, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from luminate.text.core import as_text_model


WINDOW_TOKENS = 256  # tokens attributed at most: integrated gradients keep n_steps copies of the window


@dataclass
class TokenAttribution:
    """``scores[t]``: the contribution of token ``t`` of ``text`` (``tokens[t]``, characters ``offsets[t]``) to the
    target (``what``); ``value`` the target on the text, ``baseline`` on the padding baseline, ``delta`` Captum's
    completeness error. On a long text ``text`` is the attributed window: tokens ``window[0]..window[1] - 1`` of
    the ``n_tokens`` of the whole text (``offsets`` are within the window's text)."""

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    scores: list[float]
    what: str
    value: float
    baseline: float
    delta: float
    window: tuple[int, int] = (0, 0)
    n_tokens: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _embedding_layer(model) -> torch.nn.Module:
    net = model.network
    for name in ("embedding", "embeddings.word_embeddings"):
        try:
            return net.get_submodule(name)
        except AttributeError:
            continue
    raise TypeError(f"{model.name}: no token embedding layer found for attribution")


def _window(model, n: int, end: int, cut: bool = False) -> tuple[int, int]:
    """Token range ``[a, b)`` attributed for a target at token ``end - 1`` of a text of ``n`` tokens (``cut``: the
    input must end at the target, as for a next-character logit)."""
    if model.recurrent:  # a recurrent target depends only on the tokens up to it
        a = max(0, end - WINDOW_TOKENS)
        return (a, end) if a or cut else (0, max(end, min(n, WINDOW_TOKENS)))  # later tokens show their zeros
    from luminate.text.core import windows

    return next(((a, b) for a, b in windows(model, n) if a < end <= b), (0, n))  # where its activations were read


def _context(model, ids: torch.Tensor, a: int) -> dict | None:
    """The recurrent state after the prefix and tokens ``0..a-1`` (``None`` when the window starts the text)."""
    from luminate.text.core import carries_state, run_carried

    if a == 0:
        return None
    if not carries_state(model):
        raise ValueError(f"{model.name} cannot carry its state into a window: attribute a text of at most "
                         f"{WINDOW_TOKENS} tokens")
    carry: dict = {}
    with torch.no_grad(), model.frozen():
        run_carried(model, torch.tensor([model.prefix + ids[:a].tolist()], dtype=torch.long, device=model.device),
                    carry)
    return carry


def _batched(carry: dict | None, n: int) -> dict | None:
    """A fresh copy of ``carry`` for a batch of ``n`` (LSTM states ``[layers, 1, H]``, tails ``[1, T, D]``)."""
    if carry is None:
        return None
    out = {}
    for key, value in carry.items():
        if isinstance(value, dict):
            out[key] = {"state": tuple(v.expand(v.shape[0], n, *v.shape[2:]).contiguous() for v in value["state"])}
        else:
            out[key] = value.expand(n, *value.shape[1:]).contiguous()
    return out


def _call(model, x: torch.Tensor, carry: dict | None, mask: torch.Tensor | None) -> torch.Tensor:
    if model.recurrent:
        return model.network(x) if carry is None else model.network(x, carry=_batched(carry, x.shape[0]))
    return model.network(x, mask.expand_as(x))


def attribute_tokens(model, text: str, layer: str | None = None, unit: int | None = None,
                     position: int | None = None, target: int | str | None = None, n_steps: int = 32
                     ) -> TokenAttribution:
    """Integrated gradients of one target over the tokens of ``text`` (at most :data:`WINDOW_TOKENS` of them,
    ending at the target: see the module docstring).

    The target is either unit ``unit`` of ``layer`` at token ``position`` (default: where the unit peaks in this
    text), or (``layer=None``) for ``char_rnn`` the logit of next character ``target`` (an id or a one-character
    string; default the character that follows the text's first ``position`` characters, or the predicted one).
    """
    from captum.attr import LayerIntegratedGradients

    model = as_text_model(model)
    enc = model.encode(text)
    n = len(enc.ids)
    if n == 0:
        raise ValueError("the text has no tokens to attribute")
    if layer is not None:
        position, (a, b), forward, what, handle = _unit_target(model, enc, text, layer, unit, position)
    else:
        position, (a, b), forward, what = _logit_target(model, enc, position, target)
        handle = None
    pre = model.prefix if a == 0 or not model.recurrent else []  # a later recurrent window continues a state
    suf = [] if model.recurrent else model.suffix
    ids = torch.tensor([pre + enc.ids[a:b].tolist() + suf], dtype=torch.long, device=model.device)
    base = ids.clone()
    base[0, len(pre):len(pre) + b - a] = model.pad_id
    carry = _context(model, enc.ids, a) if model.recurrent else None
    mask = torch.ones_like(ids)
    target_fn = lambda x: forward(_call(model, x, carry, mask), x, len(pre))
    try:
        with model.frozen():
            lig = LayerIntegratedGradients(target_fn, _embedding_layer(model))
            attr, delta = lig.attribute(ids, baselines=base, n_steps=n_steps, return_convergence_delta=True,
                                        internal_batch_size=n_steps)
            with torch.no_grad():
                value, baseline = float(target_fn(ids)[0]), float(target_fn(base)[0])
    finally:
        if handle is not None:
            handle.remove()
    scores = attr.sum(-1)[0, len(pre):len(pre) + b - a].detach().cpu()
    if (a, b) != (0, n):
        if not model.recurrent:
            why = f"the window of at most {model.contract.max_length} tokens its activations were read in"
        elif a:
            why = (f"a window of {WINDOW_TOKENS} ending at the target; the text before it was read first and "
                   "its state held fixed")
        else:
            why = f"a window of at most {WINDOW_TOKENS} tokens"
        what += f"; attributed over tokens {a}..{b - 1} of the text's {n}, {why}"
    c0, c1 = enc.offsets[a][0], enc.offsets[b - 1][1]
    offsets = [(s - c0, e - c0) for s, e in enc.offsets[a:b]]
    return TokenAttribution(enc.text[c0:c1], enc.tokens[a:b], offsets, scores.tolist(), what, value, baseline,
                            float(delta[0]), (a, b), n)


def _unit_target(model, enc, text: str, layer: str, unit: int | None, position: int | None):
    """Unit ``unit`` of ``layer`` at token ``position`` (default its peak): the window, the target and a hook."""
    from luminate.text.core import activations

    if unit is None:
        raise ValueError("give the unit of the layer to attribute")
    model.check_channel(layer, int(unit))
    n = len(enc.ids)
    if position is None:
        position = int(activations(model, [text], layer)[0][:, unit].argmax())
    if not 0 <= position < n:
        raise IndexError(f"position {position} is outside the text's {n} tokens")
    a, b = _window(model, n, position + 1)
    what = f"{layer} unit {unit} at token {position} ({enc.tokens[position]!r})"
    store = {}
    handle = model.layer(layer).register_forward_hook(lambda m, i, o: store.__setitem__("out", o))

    def forward(_, x, n_pre):
        out = store["out"]  # a readout layer's output is shorter than its input: row t is for token t all the same
        return out[:, out.shape[1] - x.shape[1] + n_pre + position - a, unit]
    return position, (a, b), forward, what, handle


def _logit_target(model, enc, position: int | None, target: int | str | None):
    """``char_rnn``'s logit of next character ``target`` after ``position`` tokens: the window and the target."""
    if not model.recurrent:
        raise ValueError(f"{model.name} has no next-token output: attribute a unit (layer and unit)")
    n = len(enc.ids)
    position = n if position is None else int(position)
    if not 0 < position <= n:
        raise IndexError(f"position {position}: the next character can be attributed after 1..{n} "
                         "characters of the text")
    a, b = _window(model, n, position, cut=True)
    if target is None:
        carry = _context(model, enc.ids, a)
        ids = torch.tensor([(model.prefix if a == 0 else []) + enc.ids[a:b].tolist()], dtype=torch.long,
                           device=model.device)
        with torch.no_grad(), model.frozen():
            target = int(_call(model, ids, carry, None)[0, -1].argmax())
    if isinstance(target, str):
        hits = [i for i in range(model.contract.vocab_size) if model.contract.decode(i) == target]
        if not hits:
            raise KeyError(f"{target!r} is not in {model.name}'s vocabulary")
        target = hits[0]
    what = f"logit of next character {model.contract.decode(int(target))!r} after token {position}"
    return position, (a, b), (lambda out, x, n_pre: out[:, -1, int(target)]), what
