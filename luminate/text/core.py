"""Text in, activations out: encoding (texts are read by :func:`luminate.data.inputs.read_texts`), per-token activations, bits per character, embeddings.

Shapes: a text of ``T`` tokens (characters for ``char_rnn``, word pieces for ``minilm_l6``) gives ``[T, C]`` at a
layer of ``C`` units. Recurrent models (``char_rnn``) run over the whole text with their state carried along;
transformers read windows of at most ``contract.max_length`` tokens (each with its own ``[CLS]``/``[SEP]``), and a
text longer than one window is split into consecutive windows (a warning says so once per call).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Sequence

import torch

from luminate.data.inputs import Texts, read_texts  # noqa: F401 (the one text reader, re-exported)
from luminate.models.base import as_model
from luminate.models.textmodel import Encoded, TextModel


class LongTextWarning(UserWarning):
    """A text was longer than the model's window and was read in several windows."""


def as_text_model(model) -> TextModel:
    """A :class:`TextModel` from a model or zoo name, or an error that says an image model was given."""
    model = as_model(model)
    if not getattr(model, "is_text", False):
        raise TypeError(f"{model.name} is an image model, but luminate.text needs a text model (char_rnn or "
                        "minilm_l6: luminate.models.load('char_rnn')). Image models go to luminate.activations, "
                        "render and the image Microscope.")
    return model


def encode(model, texts: str | Sequence[str]) -> list[Encoded]:
    """Each text as :class:`~luminate.models.textmodel.Encoded` (ids, offsets, tokens, unknown characters)."""
    model = as_text_model(model)
    return [model.encode(t) for t in ([texts] if isinstance(texts, str) else texts)]


def windows(model: TextModel, n_tokens: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` token ranges a text of ``n_tokens`` is read in: one range for recurrent models, else
    consecutive windows of ``max_length`` minus the special tokens."""
    if model.recurrent or n_tokens == 0:
        return [(0, n_tokens)]
    step = model.contract.max_length - len(model.prefix) - len(model.suffix)
    return [(s, min(s + step, n_tokens)) for s in range(0, n_tokens, step)]


def _pieces(model: TextModel, encoded: Sequence[Encoded]) -> tuple[list[torch.Tensor], list[tuple[int, int, int]]]:
    """Network inputs (prefix + ids + suffix per window) and ``(text, start, end)`` for each."""
    inputs, where, long = [], [], 0
    pre, suf = torch.tensor(model.prefix, dtype=torch.long), torch.tensor(model.suffix, dtype=torch.long)
    for k, enc in enumerate(encoded):
        spans = windows(model, len(enc.ids))
        long += len(spans) > 1
        for a, b in spans:
            inputs.append(torch.cat([pre, enc.ids[a:b], suf]))
            where.append((k, a, b))
    if long:
        warnings.warn(f"{long} text(s) longer than {model.name}'s window of {model.contract.max_length} tokens were "
                      "read in consecutive windows", LongTextWarning, stacklevel=3)
    return inputs, where


def _run(model: TextModel, batch: list[torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """One padded batch through the network; ``{layer: [N, T', C]}`` (detached, CPU)."""
    lengths = [len(x) for x in batch]
    ids = torch.full((len(batch), max(lengths)), model.pad_id, dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, :len(x)] = x
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        module = model.layer(name)
        handles.append(module.register_forward_hook(
            lambda mod, inp, out, name=name: store.setdefault(name, out.detach().cpu())))
    try:
        with torch.no_grad(), model.frozen():
            ids, mask = ids.to(model.device), mask.to(model.device)
            model(ids) if model.recurrent else model(ids, mask)
    finally:
        for h in handles:
            h.remove()
    for name in layers:
        if name not in store or not isinstance(store[name], torch.Tensor) or store[name].ndim != 3:
            raise ValueError(f"layer {name!r} of {model.name} gives no per-token output; list its layers with "
                             "luminate.models.layers(model)")
    store["_ids_length"] = torch.tensor(ids.shape[1])
    return store


CHUNK_TOKENS = 4096  # a recurrent text longer than this is read in chunks of it, the state carried between them


def carries_state(model: TextModel) -> bool:
    """True when the recurrent network can read a sequence in chunks: its ``forward`` takes ``carry`` (a dict the
    network keeps its state in between calls, as ``char_rnn`` does)."""
    if not model.recurrent:
        return False
    try:
        return "carry" in inspect.signature(model.network.forward).parameters
    except (TypeError, ValueError):
        return False


def run_carried(model: TextModel, ids: torch.Tensor, carry: dict | None = None) -> torch.Tensor:
    """``ids`` ``[N, T]`` through a recurrent network in chunks of :data:`CHUNK_TOKENS` with its state carried
    (``carry``: the state to continue from, updated in place); the outputs of the chunks concatenated along
    time, as one pass over the whole sequence would give them. Forward hooks fire once per chunk."""
    carry = {} if carry is None else carry
    outs = [model(ids[:, s:s + CHUNK_TOKENS], carry=carry) for s in range(0, ids.shape[1], CHUNK_TOKENS)]
    return torch.cat(outs, 1)


def _run_long(model: TextModel, ids: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """One long recurrent text ``[T]`` (prefix included) read in chunks: ``{layer: [1, T', C]}`` (CPU), the
    chunks' outputs joined, so memory grows with the layers kept, not with the network's whole forward pass."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [model.layer(name).register_forward_hook(
        lambda mod, inp, out, name=name: parts[name].append(out.detach().cpu())) for name in layers]
    try:
        with torch.no_grad(), model.frozen():
            run_carried(model, ids[None].to(model.device))
    finally:
        for h in handles:
            h.remove()
    for name in layers:
        if not parts[name] or not all(isinstance(o, torch.Tensor) and o.ndim == 3 for o in parts[name]):
            raise ValueError(f"layer {name!r} of {model.name} gives no per-token output; list its layers with "
                             "luminate.models.layers(model)")
    store = {name: torch.cat(parts[name], 1) for name in layers}
    store["_ids_length"] = torch.tensor(len(ids))
    return store


def activations(model, texts: str | Sequence[str], layer: str | Sequence[str], batch_size: int = 16
                ) -> list[torch.Tensor] | dict[str, list[torch.Tensor]]:
    """Per-token activations: one ``[T_i, C]`` float tensor per text (``T_i`` its characters or word pieces).

    A list of layer names gives ``{layer: [[T_i, C], ...]}``. Recurrent models run over each whole text with the
    state carried (a text over :data:`CHUNK_TOKENS` tokens in chunks, so memory stays bounded); transformers read windows of ``max_length`` tokens. Special tokens (padding, ``[CLS]``,
    ``[SEP]``) are left out, so row ``t`` belongs to token ``t`` of the text (``char_rnn``: character ``t``).
    Layers whose output is shorter than the input by the readout window (``char_rnn``'s ``attention`` and
    ``output``) give row ``t`` for the prediction made after token ``t``.
    """
    model = as_text_model(model)
    single = isinstance(layer, str)
    names = [layer] if single else list(layer)
    for name in names:
        model.resolve(name)  # unknown names fail before any work, with the closest names
    encoded = encode(model, texts)
    inputs, where = _pieces(model, encoded)
    pieces: dict[str, dict[int, torch.Tensor]] = {n: {} for n in names}
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # similar lengths share a batch
    long = carries_state(model)
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if long:  # each long text alone, in chunks with the state carried
        batches = ([[i] for i in order if len(inputs[i]) > CHUNK_TOKENS]
                   + [b for b in ([i for i in order if len(inputs[i]) <= CHUNK_TOKENS][s:s + batch_size]
                                  for s in range(0, len(order), batch_size)) if b])
    for chunk in batches:
        single_long = long and len(chunk) == 1 and len(inputs[chunk[0]]) > CHUNK_TOKENS
        out = _run_long(model, inputs[chunk[0]], names) if single_long else _run(model, [inputs[i] for i in chunk], names)
        padded = int(out["_ids_length"])
        for j, i in enumerate(chunk):
            k, a, b = where[i]
            for name in names:
                value = out[name][j]
                shift = value.shape[0] - padded + len(model.prefix)
                pieces[name][i] = value[shift:shift + (b - a)]
    result = {}
    for name in names:  # each text's windows back in order (batches were sorted by length)
        per: list[list[torch.Tensor]] = [[] for _ in encoded]
        for i in range(len(inputs)):
            per[where[i][0]].append(pieces[name][i])
        result[name] = [torch.cat(p) for p in per]
    return result[names[0]] if single else result


def next_token_logits(model, text: str, carried: bool = False, batch_size: int = 512) -> tuple[torch.Tensor, Encoded]:
    """``([T, V] logits, Encoded)``: row ``t`` predicts token ``t`` of ``text`` from what precedes it.

    ``char_rnn`` predicts from the 40-character window before each character, read from a fresh state, as
    textgenrnn does (``carried=True``: one pass with the state carried along the whole text instead; the model
    never saw more than 40 characters in training, and that state drifts: see docs/text.md).
    """
    model = as_text_model(model)
    if not model.recurrent or not hasattr(model, "window"):
        raise TypeError(f"{model.name} is not a next-token language model (it has no next-token readout); "
                        "bits_per_char needs char_rnn")
    enc = model.encode(text)
    w = model.window
    padded = torch.cat([torch.tensor(model.prefix[-w:], dtype=torch.long), enc.ids]).to(model.device)
    with torch.no_grad(), model.frozen():
        if carried:
            logits = (run_carried(model, padded[None]) if carries_state(model) else model(padded[None]))[0, :len(enc.ids)]
        else:
            starts = padded.unfold(0, w, 1)[:len(enc.ids)]          # window ending just before token t
            logits = torch.cat([model(starts[s:s + batch_size])[:, -1] for s in range(0, len(starts), batch_size)])
    return logits.cpu(), enc


def bits_per_char(model, text: str | Sequence[str], carried: bool = False) -> float:
    """Average bits the model needs per character of ``text`` (lower is better; a list: over all its texts).

    Characters outside the vocabulary are not scored (they are counted: see :func:`encode`). Uniform guessing over
    ``char_rnn``'s 465 ids costs ``log2(465) = 8.9`` bits.
    """
    texts = [text] if isinstance(text, str) else list(text)
    total, count = 0.0, 0
    for t in texts:
        logits, enc = next_token_logits(model, t, carried)
        known = enc.ids > 0
        if not bool(known.any()):
            continue
        lp = torch.log_softmax(logits.double(), -1)[torch.arange(len(enc.ids)), enc.ids]
        total += float(-lp[known].sum())
        count += int(known.sum())
    if count == 0:
        raise ValueError("no character of the text is in the model's vocabulary, so there is nothing to score")
    return total / count / math.log(2)


def embed(model, sentences: str | Sequence[str], batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
    """Sentence embeddings ``[N, C]``: the mean of the last layer's token states over every token (``[CLS]`` and
    ``[SEP]`` included, every window of a long sentence), then unit length (``normalize``), as
    sentence-transformers' pipeline for all-MiniLM-L6-v2 does (Transformer, Pooling, Normalize)."""
    model = as_text_model(model)
    if model.recurrent:
        raise TypeError(f"{model.name} is a character language model, not a sentence encoder; embed() needs "
                        "minilm_l6")
    last = [n for n, m in model.network.named_modules() if n.startswith("encoder.layer.") and n.count(".") == 2][-1]
    sentences = [sentences] if isinstance(sentences, str) else list(sentences)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LongTextWarning)
        encoded = encode(model, sentences)
        inputs, where = _pieces(model, encoded)
    sums = torch.zeros(len(sentences), model.layer_info(last).channels)
    counts = torch.zeros(len(sentences))
    for s in range(0, len(inputs), batch_size):
        out = _run(model, inputs[s:s + batch_size], [last])[last]
        for j, (k, _, _) in enumerate(where[s:s + batch_size]):
            n = len(inputs[s + j])
            sums[k] += out[j, :n].sum(0)
            counts[k] += n
    means = sums / counts.clamp_min(1)[:, None]
    return torch.nn.functional.normalize(means, dim=-1) if normalize else means


def generate(model, prefix: str = "", length: int = 80, temperature: float = 0.5, seed: int = 0) -> str:
    """Sample ``length`` characters after ``prefix`` from ``char_rnn`` (textgenrnn's own sampling: a 40-character
    window, softmax at ``temperature``; ``temperature=0`` takes the most likely character). Seeded, so repeatable."""
    model = as_text_model(model)
    if not model.recurrent or not hasattr(model, "window"):
        raise TypeError(f"{model.name} does not predict the next character; generate() needs char_rnn")
    if temperature < 0:
        raise ValueError(f"temperature must be 0 or more, got {temperature}")
    gen = torch.Generator().manual_seed(seed)
    ids = model.prefix + model.encode(prefix).ids.tolist()
    out = []
    with torch.no_grad(), model.frozen():
        for _ in range(length):
            window = torch.tensor([ids[-model.window:]], dtype=torch.long, device=model.device)
            logits = model(window)[0, -1].double().cpu()
            logits[model.pad_id] = -math.inf  # padding is never a character
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            ids.append(nxt)
            out.append(model.contract.decode(nxt))
    return prefix + "".join(out)
