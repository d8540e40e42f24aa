"""Attribution graphs (luminate.circuits): the definitions on networks where they are exact, pruning, interventions
that leave the network as it was, bases, targets, in-place ReLUs, errors, the page and the toolbox route."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import luminate
from luminate import circuits
from luminate.circuits import CircuitSettings, keep_by_share, prune_edges, trace
from luminate.circuits.graph import Edge

ALL = CircuitSettings(node_share=1.0, max_nodes=1000, edge_share=1.0, draws=3)
LABELS = [f"class{i}" for i in range(5)]


def _linear_net(seed: int = 0) -> luminate.models.Model:
    """conv -> conv -> conv -> mean -> linear, no biases, no activations: every definition is exact."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.Conv2d(6, 5, 1, bias=False),
                        nn.Conv2d(5, 4, 3, stride=2, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5, bias=False))
    return luminate.models.wrap(net, 16, value_range=(0, 1), labels=LABELS)


class Block(nn.Module):
    """A torchvision-style basic block: one in-place ReLU module reused, ``out += identity``."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True)
        self.layer1, self.layer2 = nn.Sequential(Block(8)), nn.Sequential(Block(8))
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet() -> luminate.models.Model:
    torch.manual_seed(0)
    net = TinyResNet()
    for m in net.modules():   # non-trivial BatchNorm statistics, so eval mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.train()
    return luminate.models.wrap(net, 16, preset="imagenet", labels=LABELS)


def _image(seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_definitions_are_exact_on_a_linear_network():
    model, x = _linear_net(), _image()
    g = trace(model, x, "class2", layers=["0", "1", "2"], settings=ALL)
    with torch.no_grad():
        logit = float(model(x)[0, 2])
    assert g.score == pytest.approx(logit, abs=1e-5)
    for nodes in g.nodes:   # a layer's scores add up to the logit (no bias, linear)
        assert float(nodes.scores.sum()) == pytest.approx(logit, abs=1e-4)
        assert nodes.total == pytest.approx(logit, abs=1e-4)
        for unit in nodes.kept:   # the edges into a node from every node below add up to its score
            assert nodes.inflow[unit] == pytest.approx(float(nodes.scores[unit]), abs=1e-4)
    edges = [e for e in g.edges if e.target == ("1", 3)]
    assert sum(e.weight for e in edges) == pytest.approx(float(g.layer_nodes("1").scores[3]), abs=1e-4)
    assert all(e.map.shape == (16, 16) for e in edges)
    # on a linear network removing a node removes exactly its score
    assert g.ablate(["2/1"])["drop"] == pytest.approx(float(g.layer_nodes("2").scores[1]), abs=1e-4)
    assert g.amplify([("2", 1)], 3.0)["drop"] == pytest.approx(-2 * float(g.layer_nodes("2").scores[1]), abs=1e-4)


def test_integrated_gradients_add_up_to_the_change_from_a_zero_layer():
    model, x = _resnet(), _image()
    g = trace(model, x, "class1", layers=["layer1", "layer2"], settings=ALL.replace(method="integrated", steps=64))
    zeroed = g.amplify([("layer2", u) for u in range(8)], 0.0)["score"]
    assert float(g.layer_nodes("layer2").scores.sum()) == pytest.approx(g.score - zeroed, abs=2e-2)


def test_pruning_keeps_the_fewest_covering_the_share():
    w = torch.tensor([1.0, -5.0, 3.0, 1.0, 0.0])
    assert keep_by_share(w, 0.8) == [1, 2]
    assert keep_by_share(w, 0.81) == [1, 2, 0]
    assert keep_by_share(w, 0.8, limit=1) == [1]
    assert keep_by_share(w, 1.0) == [1, 2, 0, 3]          # a zero weight is never kept
    edges = [Edge(("a", i), ("b", 0), v) for i, v in enumerate([0.1, -4.0, 5.0, 0.9])]
    assert [e.weight for e in prune_edges(edges, 0.9)] == [-4.0, 5.0]
    g = trace(_linear_net(), _image(), "class0", layers=["1", "2"], settings=CircuitSettings(max_nodes=2))
    assert all(len(n.kept) <= 2 for n in g.nodes)
    scores = g.layer_nodes("1").scores.abs()
    assert g.kept("1") == torch.argsort(scores, descending=True)[:len(g.kept("1"))].tolist()
    with pytest.raises(ValueError, match="share"):
        CircuitSettings(node_share=1.5)


def test_interventions_restore_the_network_exactly():
    model, x = _resnet(), _image()
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    modes = [m.training for m in model.network.modules()]
    flags = [p.requires_grad for p in model.network.parameters()]
    with torch.no_grad(), model.frozen():
        out = model(x)
    g = trace(model, x, "class3", layers=["layer1", "layer2"])
    result = g.ablate([("layer2", u) for u in g.kept("layer2")])
    hooks = [m for m in model.network.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooks
    assert [m.training for m in model.network.modules()] == modes and modes[0]
    assert [p.requires_grad for p in model.network.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.network.state_dict().items())
    with torch.no_grad(), model.frozen():
        assert torch.equal(model(x), out)
    # the same ablation by a plain hook on the module gives the same score
    kept = g.kept("layer2")

    def zero(m, i, o):
        o = o.clone()
        o[:, kept] = 0
        return o

    handle = model.network.layer2.register_forward_hook(zero)
    with torch.no_grad(), model.frozen():
        manual = model(x)[0, 3]
    handle.remove()
    assert result["score"] == pytest.approx(float(manual), abs=1e-5)


def test_wrapped_network_with_inplace_relus():
    model, x = _resnet(), _image()
    g = trace(model, x, "class0", layers=["layer2", "relu", "layer1.0.bn2"], settings=ALL)
    assert g.layers == ["relu", "layer1.0.bn2", "layer2"]   # forward order
    for nodes in g.nodes:   # the captured activations are the layers' own outputs, not overwritten in place
        with torch.no_grad(), model.frozen():
            act = luminate.activations(model, x, nodes.layer)
        assert torch.allclose(nodes.codes, act[0], atol=1e-6)
    # layer2 is the network's last spatial map: its scores add up to the logit minus the bias
    bias = float(model.network.fc.bias[0].detach())
    assert float(g.layer_nodes("layer2").scores.sum()) == pytest.approx(g.score - bias, abs=1e-4)
    assert g.faithfulness["layer2"]["kept"] == len(g.kept("layer2"))


def test_logit_difference():
    model, x = _linear_net(), _image()
    both = trace(model, x, "class1 - class4", layers=["1"], settings=ALL)
    one = trace(model, x, "class1", layers=["1"], settings=ALL)
    other = trace(model, x, ("class4"), layers=["1"], settings=ALL)
    with torch.no_grad():
        logits = model(x)[0]
    assert both.target.classes == (1, 4) and both.target.label == "class1 - class4"
    assert both.score == pytest.approx(float(logits[1] - logits[4]), abs=1e-5)
    diff = one.layer_nodes("1").scores - other.layer_nodes("1").scores
    assert torch.allclose(both.layer_nodes("1").scores, diff, atol=1e-5)


def test_dictionary_basis():
    from luminate.features import Dictionary

    model, x = _resnet(), _image()
    torch.manual_seed(3)
    q = torch.linalg.qr(torch.randn(8, 8))[0]            # 8 orthonormal directions in layer1's 8 channels
    tensors = {"W_dec": q.contiguous(), "b_dec": torch.zeros(8), "W_enc": q.t().contiguous(), "b_enc": torch.zeros(8)}
    d = Dictionary(tensors, "topk", 8, "layer1", model.name, model.weights_fingerprint())
    assert torch.allclose(d.directions, q.t(), atol=1e-6)
    units = trace(model, x, "class2", layers=["layer1", "layer2"], settings=ALL)
    feats = trace(model, x, "class2", layers=["layer1", "layer2"], basis=d, settings=ALL)
    nodes = feats.layer_nodes("layer1")
    assert nodes.kind == "feature" and feats.to_json()["bases"]["layer1"].startswith("features")
    z = d.encode(units.layer_nodes("layer1").codes[None])[0]
    assert torch.allclose(nodes.codes, z, atol=1e-5)
    # the layer's total is the units' (what the features leave out is the difference: negative codes are cut)
    assert nodes.total == pytest.approx(float(units.layer_nodes("layer1").scores.sum()), abs=1e-4)
    assert [e for e in feats.edges if e.source[0] == "layer1" and e.target[0] == "layer2"]
    # removing a feature removes its component z_k D_k at every position
    f = nodes.kept[0]
    removed = feats.ablate([("layer1", f)])
    handle = model.network.layer1.register_forward_hook(
        lambda m, i, o: o - torch.einsum("nhw,c->nchw", d.encode(o)[:, f], d.directions[f]))
    with torch.no_grad(), model.frozen():
        manual = model(x)[0, 2]
    handle.remove()
    assert removed["score"] == pytest.approx(float(manual), abs=1e-4)


def test_groups_basis_and_json(tmp_path):
    model, x = _resnet(), _image()
    g = trace(model, x, "class0", layers=["layer1", "layer2"], basis="groups", groups=3)
    data = json.loads(g.save_json(tmp_path / "g.json").read_text())
    assert data["layers"] == ["input", "layer1", "layer2", "target"]
    assert {n["kind"] for n in data["nodes"]} <= {"input", "group", "target"}
    ids = {n["id"] for n in data["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in data["edges"])
    node = next(n for n in data["nodes"] if n["kind"] == "group")
    assert node["unit"] < 3 and len(node["map"]) == 16 and "ablate" in node and "amplify" in node
    assert set(data["faithfulness"]["layer2"]) >= {"kept", "kept_drop", "random_drop", "least_drop"}


def test_clear_errors():
    model, x = _linear_net(), _image()
    with pytest.raises(KeyError, match="class1"):
        trace(model, x, "clas1", layers=["1"])
    with pytest.raises(ValueError, match="two classes"):
        trace(model, x, "class1 - class2 - class3", layers=["1"])
    with pytest.raises(KeyError, match="unknown layer"):
        trace(model, x, "class1", layers=["nope"])
    with pytest.raises(ValueError, match="hidden layers only"):
        trace(model, x, "class1", layers=["input"])
    flat = luminate.models.wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.Flatten(1), nn.Linear(784, 5)),
                                16, value_range=(0, 1), labels=LABELS)
    with pytest.raises(ValueError, match="no channel axis"):
        trace(flat, x, "class1", layers=["1"])
    with pytest.raises(ValueError, match="non-negative"):
        trace(model, x, "class1", layers=["1"], basis="groups")
    model.is_text = True
    with pytest.raises(TypeError, match="text model"):
        trace(model, x, "class1", layers=["1"])


def test_lite0_default_graph_is_faithful(lite0, flower_path):
    g = trace(lite0, flower_path, "daisy")
    assert g.layers == ["blocks.4", "blocks.8", "blocks.11", "head"]
    f = g.faithfulness["head"]
    assert f["kept_drop"] >= 2 * max(f["random_drop"], 0.05) and f["kept_drop"] >= 0.25 * abs(g.score)
    assert f["kept_drop"] > f["least_drop"]
    data = g.to_json(maps=False)
    hidden = [n for n in data["nodes"] if isinstance(n["unit"], int)]
    assert {n["layer"] for n in hidden} == set(g.layers) and data["edges"]


def test_page_and_toolbox_route(tmp_path):
    pytest.importorskip("fastapi")
    import io
    import time

    from fastapi.testclient import TestClient
    from PIL import Image

    from luminate.serve.app import create_app
    from luminate.views.circuits import circuit_page

    model, x = _resnet(), _image()
    g = trace(model, x, "class0", layers=["layer1", "layer2"], settings=CircuitSettings(max_nodes=3))
    icons = {circuits.node_id(n.layer, u): torch.rand(3, 8, 8) for n in g.nodes for u in n.kept}
    html = circuit_page(g.to_json(), icons, x[0], {"layer2/0": "site/layer2/unit-00000.html"})
    assert html.count("<img") == len(icons) + 2 and "http://" not in html and "https://" not in html
    client = TestClient(create_app(model), base_url="http://127.0.0.1")
    buffer = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(buffer, format="PNG")
    image_id = client.post("/api/images", files={"file": ("x.png", buffer.getvalue(), "image/png")}).json()["id"]
    assert client.get(f"/api/circuit?image={image_id}&target=nope").status_code == 400
    for _ in range(200):
        r = client.get(f"/api/circuit?image={image_id}&target=class0&layers=layer1,layer2")
        if r.status_code == 200:
            break
        assert r.status_code == 202 and r.json()["status"] in ("queued", "tracing")
        time.sleep(0.05)
    data = r.json()
    assert data["layers"] == ["input", "layer1", "layer2", "target"] and data["edges"]
    node = next(n["id"] for n in data["nodes"] if n["layer"] == "layer2")
    live = client.post("/api/circuit/intervene", json={"image": image_id, "target": "class0", "nodes": [node]})
    assert live.status_code == 200 and live.json()["drop"] == pytest.approx(
        next(n for n in data["nodes"] if n["id"] == node)["ablate"]["drop"], abs=1e-5)
