"""Which tokens of a text drive a unit (or an output logit): integrated gradients on the token embeddings.

Captum's ``LayerIntegratedGradients`` integrates the gradient of the target along the straight path from a baseline
embedding (every text token replaced by the padding id; ``[CLS]``/``[SEP]`` and ``char_rnn``'s start padding kept)
to the text's own embeddings, and sums over the embedding dimension: one number per token, whose sum approximates
``target(text) - target(baseline)`` (the completeness ``delta`` reported says how closely).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from luminate.text.core import as_text_model


@dataclass
class TokenAttribution:
    """``scores[t]``: the contribution of token ``t`` of ``text`` (``tokens[t]``, characters ``offsets[t]``) to the
    target (``what``); ``value`` the target on the text, ``baseline`` on the padding baseline, ``delta`` Captum's
    completeness error."""

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    scores: list[float]
    what: str
    value: float
    baseline: float
    delta: float

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


def attribute_tokens(model, text: str, layer: str | None = None, unit: int | None = None,
                     position: int | None = None, target: int | str | None = None, n_steps: int = 32
                     ) -> TokenAttribution:
    """Integrated gradients of one target over the tokens of ``text``.

    The target is either unit ``unit`` of ``layer`` at token ``position`` (default: where the unit peaks in this
    text), or (``layer=None``) for ``char_rnn`` the logit of next character ``target`` (an id or a one-character
    string; default the character that follows the text's first ``position`` characters, or the predicted one).
    """
    from captum.attr import LayerIntegratedGradients

    from luminate.text.core import activations

    model = as_text_model(model)
    enc = model.encode(text)
    if len(enc.ids) == 0:
        raise ValueError("the text has no tokens to attribute")
    if len(enc.ids) > model.contract.max_length and not model.recurrent:
        raise ValueError(f"the text has {len(enc.ids)} tokens, more than {model.name}'s window of "
                         f"{model.contract.max_length}: attribute a shorter piece")
    pre, suf = model.prefix, model.suffix
    ids = torch.tensor([pre + enc.ids.tolist() + suf], dtype=torch.long, device=model.device)
    base = ids.clone()
    base[0, len(pre):len(pre) + len(enc.ids)] = model.pad_id
    mask = torch.ones_like(ids)
    if layer is not None:
        if unit is None:
            raise ValueError("give the unit of the layer to attribute")
        model.check_channel(layer, int(unit))
        if position is None:
            position = int(activations(model, [text], layer)[0][:, unit].argmax())
        if not 0 <= position < len(enc.ids):
            raise IndexError(f"position {position} is outside the text's {len(enc.ids)} tokens")
        module = model.layer(layer)
        what = f"{layer} unit {unit} at token {position} ({enc.tokens[position]!r})"
        store = {}
        handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))

        def forward(x):
            model.network(x) if model.recurrent else model.network(x, mask.expand_as(x))
            out = store["out"]
            shift = out.shape[1] - x.shape[1] + len(pre)
            return out[:, shift + position, unit]
    else:
        if not model.recurrent:
            raise ValueError(f"{model.name} has no next-token output: attribute a unit (layer and unit)")
        handle = None
        position = len(enc.ids) if position is None else int(position)
        logits_at = lambda x: model.network(x)[:, -1]  # the last row predicts the token after the input
        if not 0 < position <= len(enc.ids):
            raise IndexError(f"position {position}: the next character can be attributed after 1..{len(enc.ids)} "
                             "characters of the text")
        ids, base = ids[:, :len(pre) + position], base[:, :len(pre) + position]
        if target is None:
            with torch.no_grad():
                target = int(logits_at(ids).argmax())
        if isinstance(target, str):
            hits = [i for i in range(model.contract.vocab_size) if model.contract.decode(i) == target]
            if not hits:
                raise KeyError(f"{target!r} is not in {model.name}'s vocabulary")
            target = hits[0]
        what = f"logit of next character {model.contract.decode(int(target))!r} after token {position}"
        forward = lambda x: logits_at(x)[:, int(target)]
    try:
        with model.frozen():
            lig = LayerIntegratedGradients(forward, _embedding_layer(model))
            attr, delta = lig.attribute(ids, baselines=base, n_steps=n_steps, return_convergence_delta=True,
                                        internal_batch_size=n_steps)
            with torch.no_grad():
                value, baseline = float(forward(ids)[0]), float(forward(base)[0])
    finally:
        if handle is not None:
            handle.remove()
    scores = attr.sum(-1)[0, len(pre):len(pre) + len(enc.ids)].detach().cpu()
    n = len(enc.ids)
    full = torch.zeros(n)
    full[:len(scores)] = scores
    return TokenAttribution(text, enc.tokens, enc.offsets, full.tolist(), what, value, baseline, float(delta[0]))
