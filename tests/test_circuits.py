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
from nets import TinyViT

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


def test_token_layers_read_every_token_as_a_position():
    torch.manual_seed(0)
    vit = luminate.models.wrap(TinyViT(patch=8).eval(), 16, value_range=(0, 1), layout="tokens", labels=LABELS)
    x = _image()
    g = trace(vit, x, "class1", layers=["patch", "blocks.0", "blocks.1"], settings=ALL)
    last = g.layer_nodes("blocks.1")
    assert last.codes.shape == (16, 1, 5)                     # 1 class token + 2 x 2 patch tokens
    # the head reads the class token through a linear layer: the last block's scores add up to logit - bias
    bias = float(vit.network.head.bias[1].detach())
    assert last.kept and float(last.scores.sum()) == pytest.approx(g.score - bias, abs=1e-5)
    assert [e for e in g.edges if e.source[0] == "blocks.0" and e.target[0] == "blocks.1"]
    # removing a unit removes its channel at every token, the class token included
    unit = last.kept[0]

    def zero(m, i, o):
        o = o.clone()
        o[..., unit] = 0
        return o

    handle = vit.network.blocks[1].register_forward_hook(zero)
    with torch.no_grad():
        manual = vit(x)[0, 1]
    handle.remove()
    assert g.ablate([("blocks.1", unit)])["score"] == pytest.approx(float(manual), abs=1e-5)
    # the page's maps are the patch grid; the class token comes apart
    node = next(n for n in g.to_json()["nodes"] if n["id"] == f"blocks.1/{unit}")
    assert len(node["map"]) == 2 and len(node["map"][0]) == 2 and len(node["prefix"]) == 1
    assert node["prefix_attribution"][0] == pytest.approx(float(last.contributions[unit, 0, 0]), rel=1e-3, abs=1e-6)
    # integrated gradients on a token layer still add up to the change from a zero layer
    ig = trace(vit, x, "class1", layers=["blocks.1"], settings=ALL.replace(method="integrated", steps=64))
    zeroed = ig.amplify([("blocks.1", u) for u in range(16)], 0.0)["score"]
    assert float(ig.layer_nodes("blocks.1").scores.sum()) == pytest.approx(ig.score - zeroed, abs=1e-3)


def test_nodes_link_to_pages_the_sites_wrote(tmp_path):
    """A tiny Microscope site and a tiny features site: every node link on the page is a file the site wrote."""
    import re

    from luminate import features, microscope
    from luminate.atlas import demo_images
    from luminate.cli.circuits import node_links
    from luminate.views import features as feature_views
    from luminate.views import microscope as microscope_views
    from luminate.views.circuits import circuit_page

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    model = luminate.models.wrap(net, 32, value_range=(0, 1), labels=LABELS, name="tiny")
    photos = demo_images(tmp_path / "photos", 12, size=(36, 48))
    site = microscope.build(model, photos, tmp_path / "scope", layers=["3"], units="0:6", top_k=2, steps=2, size=32,
                            cache_dir=tmp_path / "cache", progress=False, num_workers=0)
    microscope_views.write_site(site, progress=False)
    feats = features.build(model, photos, tmp_path / "feats", "1", 8, 2, top_k=2, pages="0:8", steps=2, size=32,
                           train_steps=60, progress=False, num_workers=0, cache_dir=tmp_path / "cache")
    feature_views.write_site(feats, progress=False)
    x = _image().repeat_interleave(2, -1).repeat_interleave(2, -2)
    g = trace(model, x, "class2", layers=["1", "3"], basis=str(tmp_path / "feats"),
              settings=CircuitSettings(node_share=1.0))
    out = tmp_path / "out"
    out.mkdir()
    links = node_links(g, str(tmp_path / "scope"), str(tmp_path / "feats"), out)
    kept = {f"{n.layer}/{u}" for n in g.nodes for u in n.kept}
    assert set(links) == kept and {n.kind for n in g.nodes} == {"feature", "unit"}
    html = circuit_page(g.to_json(), {}, x[0], links)
    hrefs = json.loads(re.search(r'id="circuit-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    linked = [n for n in hrefs["nodes"] if n.get("link")]
    assert len(linked) == len(kept)
    for node in linked:   # each resolves from the page's folder to the page the site wrote for that node
        page = (out / node["link"]).resolve()
        assert page.is_file(), node["link"]
        prefix = "feature" if node["kind"] == "feature" else "unit"
        assert page.name == f"{prefix}-{node['unit']:05d}.html" and page.parent.name == node["layer"]


@pytest.mark.browser
def test_toolbox_circuit_panel_in_chromium(browser, tmp_path):
    """The toolbox's circuit panel: progress, the graph by layer with unit icons, hover draws where a unit fires,
    a click removes the unit live and the probabilities shown are the server's."""
    pytest.importorskip("uvicorn")
    from PIL import Image

    from luminate import serve

    model = _resnet()
    photo = tmp_path / "photo.png"
    Image.fromarray((_image(2)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(photo)
    with serve.running(model, render_steps=4, render_size=32) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        elsewhere, errors = [], []
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith((base, "blob:", "data:"))
                      else (elsewhere.append(route.request.url), route.abort()))
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(base)
            page.set_input_files("input[type=file]", str(photo))
            page.wait_for_function("Number(document.querySelector('#grid').dataset.frame) >= 1", timeout=20000)
            page.select_option("#circuit-class", "class3")
            page.click("#circuit-trace")
            page.wait_for_function("document.querySelector('#circuit-graph').dataset.status === 'done'", timeout=60000)
            assert page.eval_on_selector("#circuit-bar", "b => b.style.width") == "100%"
            layers = page.eval_on_selector_all(".ccol", "cs => cs.map(c => c.dataset.layer)")
            assert layers[0] == "input" and layers[-1] == "target" and len(layers) >= 3
            ids = page.eval_on_selector_all(".cnode:not(.fixed)", "ns => ns.map(n => n.dataset.id)")
            assert ids and page.eval_on_selector_all("#circuit-edges path", "ps => ps.length") > 0
            page.wait_for_function("document.querySelectorAll('.cnode img').length >= 1", timeout=60000)
            assert page.eval_on_selector(".cnode img", "i => i.naturalWidth") == 32
            # hovering a unit draws where it fires over the photo; leaving clears it
            alpha = "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)" \
                    ".filter((v, k) => k % 4 === 3).reduce((a, b) => a + b, 0)"
            node = f".cnode[data-id='{ids[0]}']"
            page.hover(node)
            assert page.eval_on_selector("#photo-map", alpha) > 0
            page.mouse.move(5, 5)
            assert page.eval_on_selector("#photo-map", alpha) == 0
            page.click(node)
            page.wait_for_function(f"document.querySelector('#circuit-readout').dataset.live === '{ids[0]}@0'")
            shown = float(page.eval_on_selector("#circuit-readout", "r => r.dataset.score"))
            layer, unit = ids[0].rsplit("/", 1)
            g = trace(model, model.preprocess(str(photo)), "class3", layers=layers[1:-1])
            assert shown == pytest.approx(g.ablate([(layer, int(unit))])["score"], abs=1e-3)
            assert "was" in page.text_content("#circuit-readout")
            assert not errors and not elsewhere, (errors, elsewhere)
        finally:
            context.close()


@pytest.mark.browser
def test_page_hover_draws_where_a_node_fires(page, tmp_path):
    from luminate.views.circuits import circuit_page

    model, x = _resnet(), _image()
    g = trace(model, x, "class0", layers=["layer1", "layer2"], settings=CircuitSettings(max_nodes=3))
    icons = {circuits.node_id(n.layer, u): torch.rand(3, 8, 8) for n in g.nodes for u in n.kept}
    path = tmp_path / "circuit.html"
    path.write_text(circuit_page(g.to_json(), icons, x[0]), encoding="utf-8")
    page.goto(path.as_uri())
    alpha = "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)" \
            ".filter((v, k) => k % 4 === 3).reduce((a, b) => a + b, 0)"
    assert page.eval_on_selector("#heat", alpha) == 0
    node = f".node[data-id='layer2/{g.kept('layer2')[0]}']"
    page.hover(node)
    assert page.eval_on_selector("#heat", alpha) > 0              # the heat map over the photo
    assert page.eval_on_selector_all("#edges path.on", "ps => ps.length") > 0
    page.mouse.move(2, 2)
    assert page.eval_on_selector("#heat", alpha) == 0
    page.click(node)
    assert "removed" in page.text_content("#readout")
    assert not page.remote_requests
