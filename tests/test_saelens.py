"""SAELens-format dictionaries: read (standard, TopK, JumpReLU), encoded with SAELens's math, written back exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from luminate.features.dictionary import Dictionary, read_dictionary
from luminate.features.saelens import read_saelens, write_saelens

D_IN, D_SAE = 12, 20


def write_folder(path, architecture="standard", apply_b_dec=True, normalize="none", dtype=torch.float32, **cfg):
    g = torch.Generator().manual_seed(0)
    t = {"W_enc": torch.randn(D_IN, D_SAE, generator=g), "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
         "W_dec": torch.randn(D_SAE, D_IN, generator=g), "b_dec": torch.randn(D_IN, generator=g)}
    if architecture == "jumprelu":
        t["threshold"] = torch.rand(D_SAE, generator=g)
    t = {k: v.to(dtype) for k, v in t.items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path / "sae_weights.safetensors"))
    config = {"architecture": architecture, "d_in": D_IN, "d_sae": D_SAE, "apply_b_dec_to_input": apply_b_dec,
              "normalize_activations": normalize, "dtype": str(dtype).removeprefix("torch."), "device": "cpu",
              "metadata": {"hook_name": "blocks.3", "model_name": "tiny"}, **cfg}
    (path / "cfg.json").write_text(json.dumps(config))
    return {k: v.float() for k, v in t.items()}, config


def saelens_encode(x, t, architecture, apply_b_dec=True, k=None, normalize="none"):
    """SAELens's documented encode (SAE.process_sae_in, then the architecture's activation)."""
    if normalize == "constant_norm_rescale":
        x = x * (D_IN ** 0.5) / x.norm(dim=-1, keepdim=True)
    if apply_b_dec:
        x = x - t["b_dec"]
    h = x @ t["W_enc"] + t["b_enc"]
    if architecture == "standard":
        return torch.relu(h)
    if architecture == "jumprelu":
        return torch.relu(h) * (h > t["threshold"])
    values, index = torch.topk(h, k, dim=-1)
    return torch.zeros_like(h).scatter(-1, index, values.relu())


X = torch.randn(30, D_IN, generator=torch.Generator().manual_seed(1)) * 2


@pytest.mark.parametrize("architecture,extra", [("standard", {}), ("topk", {"k": 4}), ("jumprelu", {}),
                                                ("standard", {"apply_b_dec": False}),
                                                ("standard", {"normalize": "constant_norm_rescale"})])
def test_encode_is_saelens_math(tmp_path, architecture, extra):
    cfg = {"k": extra["k"]} if "k" in extra else {}
    t, _ = write_folder(tmp_path / "sae", architecture, extra.get("apply_b_dec", True),
                        extra.get("normalize", "none"), **cfg)
    d = read_saelens(tmp_path / "sae")
    want = saelens_encode(X, t, architecture, extra.get("apply_b_dec", True), extra.get("k"),
                          extra.get("normalize", "none"))
    assert torch.allclose(d.encode(X), want, atol=1e-5) and (want > 0).any()
    assert d.layer == "blocks.3" and d.n_features == D_SAE and d.channels == D_IN
    maps = d.encode(X[:8].reshape(2, 2, 2, D_IN).permute(0, 3, 1, 2))            # [B, C, H, W] too
    assert torch.allclose(maps.permute(0, 2, 3, 1).reshape(8, D_SAE), want[:8], atol=1e-5)
    if architecture == "topk":
        assert int((d.encode(X) > 0).sum(1).max()) <= 4
    assert torch.allclose(d.decode(want), want @ t["W_dec"] + t["b_dec"], atol=1e-4)


@pytest.mark.parametrize("architecture,dtype", [("standard", torch.float32), ("topk", torch.float32),
                                                ("jumprelu", torch.bfloat16)])
def test_round_trip_is_exact(tmp_path, architecture, dtype):
    write_folder(tmp_path / "sae", architecture, dtype=dtype, **({"k": 3} if architecture == "topk" else {}))
    d = read_saelens(tmp_path / "sae")
    d.save(tmp_path / "luminate")                                   # through Luminate's own file, then back
    again = read_dictionary(tmp_path / "luminate" / "dictionary.safetensors")
    assert again.encoding == d.encoding and torch.equal(again.encode(X), d.encode(X))
    again.save(tmp_path / "back", format="saelens")
    original, back = load_file(str(tmp_path / "sae" / "sae_weights.safetensors")), \
        load_file(str(tmp_path / "back" / "sae_weights.safetensors"))
    assert set(original) == set(back)
    assert all(back[k].dtype == dtype and torch.equal(back[k], original[k]) for k in original)
    cfg = json.loads((tmp_path / "back" / "cfg.json").read_text())
    assert cfg["architecture"] == architecture and cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE
    assert cfg["metadata"]["hook_name"] == "blocks.3"


def test_luminate_dictionaries_write_saelens(tmp_path):
    g = torch.Generator().manual_seed(2)
    tensors = {"W_enc": torch.randn(D_SAE, D_IN, generator=g), "b_enc": torch.randn(D_SAE, generator=g),
               "W_dec": torch.randn(D_IN, D_SAE, generator=g), "b_dec": torch.randn(D_IN, generator=g),
               "theta": torch.tensor([0.3])}
    for method, arch in (("topk", "topk"), ("batchtopk", "jumprelu")):
        d = Dictionary(tensors, method, 5, "blocks.3", "tiny", "abc")
        write_saelens(d, tmp_path / method)
        back = read_saelens(tmp_path / method)
        assert json.loads((tmp_path / method / "cfg.json").read_text())["architecture"] == arch
        assert torch.allclose(back.encode(X), d.encode(X))
    with pytest.raises(ValueError, match="no SAELens form"):
        Dictionary({"components": torch.rand(4, 2 * D_IN)}, "nmf", 0, "l", "m", "w").save(tmp_path / "n", format="saelens")


def test_bad_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json and sae_weights.safetensors"):
        read_saelens(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cfg.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="it holds cfg.json"):
        read_saelens(tmp_path / "half")
    write_folder(tmp_path / "gated", "gated")
    with pytest.raises(ValueError, match="gated.*standard, topk, jumprelu"):
        read_saelens(tmp_path / "gated")
    write_folder(tmp_path / "nok", "topk")
    with pytest.raises(ValueError, match="needs k"):
        read_saelens(tmp_path / "nok")
    t, cfg = write_folder(tmp_path / "shape", "standard")
    cfg["d_in"] = D_IN + 1
    (tmp_path / "shape" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="W_enc has shape"):
        read_saelens(tmp_path / "shape")
    tensors = {"W_enc": t["W_enc"].t(), "b_enc": t["b_enc"], "W_dec": t["W_dec"].t(), "b_dec": t["b_dec"]}
    with pytest.raises(ValueError, match="'luminate' or 'saelens'"):
        Dictionary(tensors, "relu", 0, "l", "m", "w").save(tmp_path / "x", format="onnx")
