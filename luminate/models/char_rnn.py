"""textgenrnn's pretrained character model, rebuilt in PyTorch.

textgenrnn 2.0.0 (Max Woolf, MIT licence, https://github.com/minimaxir/textgenrnn) ships a character model trained
on Reddit text: a 100-d embedding of 465 ids (0 pads and stands for unknown characters), two 128-cell LSTM layers
``rnn_1`` and ``rnn_2``, an attention-weighted average over the concatenation [embedding, rnn_1, rnn_2] of a
40-character window, and a softmax over the vocabulary for the next character.

Its checkpoint holds CuDNN-format LSTM weights (Keras 2.1.5's ``CuDNNLSTM``): per gate (i, f, c, o) the kernel's
``[in, H]`` block holds a row-major ``[H, in]`` matrix, the recurrent block is stored transposed, and the bias is
``[input biases (4H), recurrent biases (4H)]``. :func:`cudnn_to_keras` turns that into Keras's plain layout
(``z = x @ kernel + h @ recurrent_kernel + bias``), :func:`keras_to_torch` into ``nn.LSTM``'s.

The converted weights ship with Luminate (``data/char_rnn.safetensors``, made by ``scripts/convert_char_rnn.py``
from the registry package's HDF5 file, credited there); ``weights="textgenrnn"`` reads the original HDF5 file when
the ``textgenrnn`` package is installed (``pip install --no-deps textgenrnn``; needs ``h5py``).

Layers: ``embedding`` ``[T, 100]``, ``rnn_1`` / ``rnn_2`` ``[T, 128]`` (hidden states), ``features`` ``[T, 356]``
(the concatenation), ``output`` ``[T, 465]`` (next-character logits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from luminate.models.textmodel import Encoded, TextContract, TextModel

DATA = Path(__file__).parent / "data"
WEIGHTS_FILE = DATA / "char_rnn.safetensors"
VOCAB_FILE = DATA / "char_rnn_vocab.json"
WINDOW = 40
META_TOKEN = "<s>"  # textgenrnn's start and end of text, one id of the vocabulary
EMBED, HIDDEN = 100, 128


def cudnn_to_keras(kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CuDNNLSTM's stored weights -> Keras LSTM's layout.

    ``kernel`` ``[in, 4H]``, ``recurrent`` ``[H, 4H]``, ``bias`` ``[8H]`` -> ``(kernel [in, 4H], recurrent [H, 4H],
    bias [4H])`` with ``z = x @ kernel + h @ recurrent + bias`` and gates i, f, c, o.
    """
    n_in, four_h = kernel.shape
    h = four_h // 4
    k_out, r_out = np.empty_like(kernel), np.empty_like(recurrent)
    for g in range(4):
        block = slice(g * h, (g + 1) * h)
        k_out[:, block] = np.ascontiguousarray(kernel[:, block]).reshape(h, n_in).T
        r_out[:, block] = recurrent[:, block].T
    return k_out, r_out, bias[:four_h] + bias[four_h:]


def keras_to_torch(kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """Keras LSTM weights (gates i, f, c, o) -> ``nn.LSTM``'s ``weight_ih_l0 [4H, in]``, ``weight_hh_l0 [4H, H]``,
    ``bias_ih_l0 [4H]`` (all the bias) and ``bias_hh_l0`` (zeros). PyTorch's gate order i, f, g, o is the same."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return {"weight_ih_l0": t(kernel.T), "weight_hh_l0": t(recurrent.T), "bias_ih_l0": t(bias),
            "bias_hh_l0": torch.zeros(bias.shape[0])}


class LSTMLayer(nn.Module):
    """One LSTM layer whose output is its hidden states ``[N, T, H]`` (a tensor, so it can be hooked by name)."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, carry: dict | None = None) -> torch.Tensor:
        """``carry`` (optional): a dict holding the ``(h, c)`` state to start from under ``"state"`` (none: zeros);
        the final state is written back there, so a long sequence can be read in chunks."""
        if carry is None:
            return self.lstm(x)[0]
        out, carry["state"] = self.lstm(x, carry.get("state"))
        return out


class Features(nn.Module):
    """The concatenation [embedding, rnn_1, rnn_2] the readout averages over (``[N, T, 356]``)."""

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts, -1)


class WindowAttention(nn.Module):
    """textgenrnn's attention-weighted average, over the last ``window`` positions at every position.

    ``[N, T, D]`` -> ``[N, T - window + 1, D]``: output ``j`` averages positions ``j .. j + window - 1`` with weights
    ``softmax(x @ W)`` over that window (textgenrnn reads one window; here every window of a text in one pass).
    """

    def __init__(self, dim: int, window: int = WINDOW):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.window = window

    block = 1024  # output positions per einsum: the [N, J, D, w] product it may copy stays bounded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.weight                                      # [N, T]
        att = torch.softmax(logits.unfold(1, self.window, 1), -1)     # [N, J, w]
        windows = x.unfold(1, self.window, 1)                         # [N, J, D, w] (a view)
        if windows.shape[1] <= self.block:
            return torch.einsum("njdw,njw->njd", windows, att)
        return torch.cat([torch.einsum("njdw,njw->njd", windows[:, j:j + self.block], att[:, j:j + self.block])
                          for j in range(0, windows.shape[1], self.block)], 1)


class CharRNN(nn.Module):
    """The network. ``ids`` ``[N, T]`` (the first ``window - 1`` positions padding or context) -> next-character
    logits ``[N, T - window + 1, V]``: row ``j`` predicts the character after position ``j + window - 1`` from the
    window ending there, with the LSTM state carried from the start of the sequence."""

    def __init__(self, vocab_size: int = 465, window: int = WINDOW):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, EMBED)
        self.rnn_1 = LSTMLayer(EMBED, HIDDEN)
        self.rnn_2 = LSTMLayer(HIDDEN, HIDDEN)
        self.features = Features()
        self.attention = WindowAttention(EMBED + 2 * HIDDEN, window)
        self.output = nn.Linear(EMBED + 2 * HIDDEN, vocab_size)

    def forward(self, ids: torch.Tensor, carry: dict | None = None) -> torch.Tensor:
        """``carry`` (optional, a dict, empty at the start of a sequence): read ``ids`` as the continuation of the
        chunks read before with the same dict (LSTM states and the last ``window - 1`` feature rows are kept in
        it). Chunks read this way give the same rows as the whole sequence at once: the first chunk
        ``T - window + 1``, each later one ``T``."""
        e = self.embedding(ids)
        h1 = self.rnn_1(e, None if carry is None else carry.setdefault("rnn_1", {}))
        h2 = self.rnn_2(h1, None if carry is None else carry.setdefault("rnn_2", {}))
        feats = self.features(e, h1, h2)
        if carry is not None:
            if "tail" in carry:
                feats = torch.cat([carry["tail"], feats], 1)
            carry["tail"] = feats[:, -(self.attention.window - 1):]
        return self.output(self.attention(feats))


def state_dict_from_hdf5(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's ``state_dict`` from textgenrnn's HDF5 checkpoint (CuDNN LSTM layout converted)."""
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading textgenrnn's HDF5 checkpoint needs h5py: pip install h5py") from e
    with h5py.File(path, "r") as f:
        g = lambda key: np.asarray(f[key], dtype=np.float32)
        state = {"embedding.weight": torch.from_numpy(g("embedding/embedding/embeddings:0")),
                 "attention.weight": torch.from_numpy(g("attention/attention/attention_W:0")[:, 0].copy()),
                 "output.weight": torch.from_numpy(g("output/output/kernel:0").T.copy()),
                 "output.bias": torch.from_numpy(g("output/output/bias:0"))}
        for layer in ("rnn_1", "rnn_2"):
            keras = cudnn_to_keras(g(f"{layer}/{layer}/kernel:0"), g(f"{layer}/{layer}/recurrent_kernel:0"),
                                   g(f"{layer}/{layer}/bias:0"))
            state.update({f"{layer}.lstm.{k}": v for k, v in keras_to_torch(*keras).items()})
    return state


def textgenrnn_files() -> tuple[Path, Path]:
    """``(weights.hdf5, vocab.json)`` of the installed ``textgenrnn`` package (found without importing it, which
    would import TensorFlow)."""
    import importlib.util

    spec = importlib.util.find_spec("textgenrnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the textgenrnn package is not installed: pip install --no-deps textgenrnn==2.0.0 "
                                "(and h5py), or use the converted weights that ship with Luminate (weights=True)")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "textgenrnn_weights.hdf5", root / "textgenrnn_vocab.json"


def load_vocab(path: str | Path = VOCAB_FILE) -> dict[str, int]:
    """textgenrnn's ``{character: id}`` (ids 1..464; 0 pads and stands for unknown characters)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def char_encoder(vocab: dict[str, int]):
    """``text -> Encoded`` over a character vocabulary: unknown characters become id 0 and are counted."""

    def encode(text: str) -> Encoded:
        ids, unknown = [], {}
        for ch in text:
            i = vocab.get(ch, 0)
            if i == 0:
                unknown[ch] = unknown.get(ch, 0) + 1
            ids.append(i)
        return Encoded(text, torch.tensor(ids, dtype=torch.long), [(k, k + 1) for k in range(len(text))],
                       list(text), sum(unknown.values()), unknown)
    return encode


def char_rnn(weights: str | Path | bool = True) -> TextModel:
    """textgenrnn's character model as a :class:`TextModel` (see the module docstring).

    ``weights``: ``True`` the converted weights shipped with Luminate; ``"textgenrnn"`` the original HDF5 file of
    the installed ``textgenrnn`` package; a ``.hdf5``/``.h5`` or ``.safetensors`` path; ``False`` random weights.
    """
    vocab_path = VOCAB_FILE
    network = CharRNN()
    if weights is not False:
        if weights is True:
            state = _read_safetensors(WEIGHTS_FILE)
        elif str(weights) == "textgenrnn":
            hdf5, vocab_path = textgenrnn_files()
            state = state_dict_from_hdf5(hdf5)
        elif Path(weights).suffix in (".hdf5", ".h5"):
            state = state_dict_from_hdf5(weights)
        else:
            state = _read_safetensors(Path(weights))
        network.load_state_dict(state)
    vocab = load_vocab(vocab_path)
    chars = {i: c for c, i in vocab.items()}
    contract = TextContract(char_encoder(vocab), len(vocab) + 1, WINDOW, "characters",
                            lambda i: chars.get(int(i), "\N{REPLACEMENT CHARACTER}" if i else ""), "char_rnn")
    offsets = {"embedding": 0, "rnn_1": EMBED, "rnn_2": EMBED + HIDDEN}

    def readout(layer: str) -> torch.Tensor | None:
        base = layer.split(".")[0]
        if base not in offsets:
            return None
        width = EMBED if base == "embedding" else HIDDEN
        return network.output.weight[:, offsets[base]:offsets[base] + width].detach().T  # [C, V]

    # textgenrnn trains on "<s>" + text + "<s>" in left-padded windows: a text starts after 39 pads and "<s>"
    start = [0] * (WINDOW - 1) + [vocab[META_TOKEN]]
    model = TextModel(network, contract, "char_rnn", prefix=start, recurrent=True, readout=readout)
    model.default_text_layer = "rnn_2"
    model.window = WINDOW
    return model


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the text models need safetensors: pip install 'luminate[text]'") from e
    if not Path(path).is_file():
        raise FileNotFoundError(f"no char_rnn weights at {path}: make them with scripts/convert_char_rnn.py, or pass "
                                "weights='textgenrnn' with the textgenrnn package installed")
    return load_file(str(path))
