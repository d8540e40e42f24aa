"""Features: a planted dictionary is recovered, a killed training run resumes to the same dictionary, the site's top
examples match the saved dictionary's codes, bad inputs get clear errors, and the pages work in Chromium."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from luminate import features, models
from luminate.activations import activations
from luminate.atlas import demo_images
from luminate.features.sae import train_sae

ROOT = Path(__file__).resolve().parent.parent
LAYER = "2"   # the tiny network's second conv, after a ReLU: [8, 16, 16] at 32 px


def planted(n_rows: int = 12000, channels: int = 16, n_features: int = 24, k: int = 3, seed: int = 0):
    """Rows that are sparse non-negative combinations (``k`` of ``n_features``) of unit directions, plus an offset:
    ``(rows [R, C], directions [N, C])``."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_features, channels, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)
    active = torch.rand(n_rows, n_features, generator=g).argsort(1)[:, :k]
    codes = torch.zeros(n_rows, n_features).scatter(1, active, 0.5 + torch.rand(n_rows, k, generator=g))
    return codes @ directions + 0.3, directions


def test_planted_sparse_dictionary_is_recovered():
    # 24 planted directions in 16 dimensions (overcomplete), 3 active per row; a dictionary twice as wide finds
    # every one of them (an exactly sized one can merge two planted directions into one code: a local minimum)
    x, truth = planted()
    sae = train_sae(lambda r: x[torch.from_numpy(r)], len(x), 16, n_features=48, k=3, steps=1500, batch_size=256,
                    lr=4e-3, seed=1, mean=x.mean(0), scale=1.0, progress=False)
    _, _, cos = features.match_directions(truth, sae.W_dec.detach().t())
    assert cos.min() >= 0.95, np.sort(cos)[:5]
    with torch.no_grad():
        z = sae.encode(x)
        r2 = 1 - (x - sae.decode(z)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert (z > 0).sum(1).float().mean() <= 3 and r2 > 0.95
    other = torch.randn(24, 16, generator=torch.Generator().manual_seed(5))
    assert features.stability(truth, other) < 0.7 < features.stability(truth, sae.W_dec.detach().t()[:24])


CHILD = """
import sys, time, torch
sys.path.insert(0, {root!r})
from luminate.features.sae import train_sae
from tests.test_features import planted
x, _ = planted(4000)
def rows(r):
    time.sleep(0.01)   # slow enough to be killed mid-run
    return x[torch.from_numpy(r)]
train_sae(rows, len(x), 16, n_features=24, k=3, steps=300, batch_size=128, seed=3, mean=x.mean(0),
          checkpoint={path!r}, checkpoint_every=20, key="k", progress=False)
print("finished")
"""


def test_training_resumes_after_sigkill_to_the_same_dictionary(tmp_path):
    x, _ = planted(4000)
    checkpoint = tmp_path / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(checkpoint))], env=env,
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not checkpoint.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate()
    assert b"finished" not in out, "the child finished before it was killed; make it slower"
    assert checkpoint.exists(), err.decode()[-2000:]
    step = torch.load(checkpoint, weights_only=True)["state"]["step"]
    assert 0 < step < 300
    read = lambda r: x[torch.from_numpy(r)]  # noqa: E731
    options = dict(steps=300, batch_size=128, seed=3, mean=x.mean(0), progress=False)
    resumed = train_sae(read, len(x), 16, n_features=24, k=3, checkpoint=checkpoint, checkpoint_every=20, key="k",
                        **options)
    straight = train_sae(read, len(x), 16, n_features=24, k=3, **options)
    for name, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6, rtol=1e-5), name
    again = train_sae(read, len(x), 16, n_features=24, k=3, checkpoint=checkpoint, checkpoint_every=20, key="other",
                      **options)
    assert torch.allclose(again.W_dec, straight.W_dec, atol=1e-6)     # another key ignores the checkpoint


def tiny_model(nan_on_black: bool = False):
    """A 2-conv classifier at 32 px; ``nan_on_black``: the input is divided by its mean first (0/0 on black)."""
    g = torch.Generator().manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)

    class ByMean(nn.Module):
        def forward(self, x):
            return x / x.mean((1, 2, 3), keepdim=True)

    if nan_on_black:
        net = nn.Sequential(ByMean(), *net)
    return models.wrap(net, 32, value_range=(0, 1), labels=["ant", "bee", "cat", "dog"],
                       name="tiny-nan" if nan_on_black else "tiny")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return demo_images(tmp_path_factory.mktemp("photos"), 20, size=(36, 56), bad_files=True)


@pytest.fixture(scope="module")
def site(tiny, photos, tmp_path_factory):
    from luminate.views.features import write_site

    root = tmp_path_factory.mktemp("features") / "site"
    built = features.build(tiny, photos, root, LAYER, 12, 2, top_k=3, pages="0:4", steps=2, size=32,
                           train_steps=150, progress=False, num_workers=0, cache_dir=root.parent / "cache")
    write_site(built, progress=False)
    return built


def test_site_examples_agree_with_the_saved_dictionary(site, tiny, photos):
    from luminate.data.inputs import image_set

    d = features.load(site.path, LAYER, model=tiny)
    assert d.directions.shape == (12, 8) and torch.allclose(d.directions.norm(dim=1), torch.ones(12), atol=1e-5)
    m = d.metrics
    assert 0 < m["r2"] <= 1 and m["l0"] <= 2 and 0 <= m["dead"] <= 1 and -1 <= m["stability"] <= 1
    images = image_set(photos)
    readable = [i for i in range(len(images)) if images.name(i) not in {n for n, _ in site.skipped}]
    x = torch.stack([images.load(i, tiny.contract) for i in readable])
    codes = d.encode(activations(tiny, x, LAYER))                                    # [I, 12, 16, 16]
    assert codes.shape == (len(readable), 12, 16, 16) and int((codes > 0).sum(1).max()) <= 2
    rows = d.decode(codes.permute(0, 2, 3, 1).reshape(-1, 12)).reshape(len(readable), 16, 16, 8)
    assert torch.allclose(d.decode(codes), rows.permute(0, 3, 1, 2), atol=1e-5)
    peak, where = codes.flatten(2).max(2)
    for f in range(12):
        top = features.top_examples(site.path, LAYER, f)
        if float(peak[:, f].max()) <= 0:
            assert top == []
            continue
        assert len(top) <= 3
        best = int(peak[:, f].argmax())
        assert Path(top[0]["image"]).name == images.name(readable[best])
        assert top[0]["value"] == pytest.approx(float(peak[best, f]), rel=1e-4)
        assert top[0]["y"] * 16 + top[0]["x"] == int(where[best, f])
    assert sorted(n for n, _ in site.skipped) == ["broken.jpg", "empty.jpg", "notes.png"]


def test_rerun_changes_nothing_and_pages_are_self_contained(site, tiny, photos):
    from luminate.views.features import write_site

    root = site.path
    pages = sorted(str(p.relative_to(root)) for p in root.rglob("*.html"))
    assert pages == ["2/feature-00000.html", "2/feature-00001.html", "2/feature-00002.html", "2/feature-00003.html",
                     "index.html"]
    for path in root.rglob("*.html"):
        text = path.read_text()
        assert "http://" not in text and "https://" not in text
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    start = time.perf_counter()
    again = features.build(tiny, photos, root, LAYER, 12, 2, top_k=3, pages="0:4", steps=2, size=32,
                           train_steps=150, progress=False, num_workers=0, cache_dir=root.parent / "cache")
    write_site(again, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert time.perf_counter() - start < 10


def test_feature_pages_show_a_guided_image_first_scored_on_held_out_photos(site):
    from luminate.analysis.shown import MIN_PHOTOS

    assert site.shown and set(site.shown) == set(site.renders)        # 17 readable photos >= MIN_PHOTOS
    assert MIN_PHOTOS <= 17
    f = sorted(site.renders)[0]
    first, second = features.shown_images(site.path, LAYER, f)
    assert first.shape == (3, 128, 128) and second.shape == site.renders[f]["positive"].shape
    assert float((first - site.renders[f]["guided"]).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((second - site.renders[f]["positive"]).abs().max()) <= 0.5 / 255 + 1e-6
    scores = features.shown_scores(site.path, LAYER, f)
    assert set(scores) == {"guided", "unguided"} and scores == site.shown[f]
    assert all(0 <= s["path_score"] <= 1 and s["flagged"] == (s["path_score"] < 0.5) for s in scores.values())
    with pytest.raises(KeyError, match="feature 99"):
        features.shown_images(site.path, LAYER, 99)


def test_bad_inputs_get_clear_errors(site, tiny, photos, tmp_path):
    with pytest.raises(ValueError, match=r"training positions .* 4096 features need at least 16384"):
        features.learn(tiny, photos, LAYER, 4096, 4, out=tmp_path / "big", progress=False, num_workers=0)
    with pytest.raises(features.DictionaryMismatchError, match="not on tiny-nan"):
        features.load(site.path, LAYER, model=tiny_model(nan_on_black=True))
    with pytest.raises(FileNotFoundError, match="it has dictionaries of 2"):
        features.load(site.path, "0")
    d = features.load(site.path, LAYER)
    with pytest.raises(features.DictionaryMismatchError, match="layer '2'"):
        d.check(tiny, "0")
    with pytest.raises(ValueError, match="8 channels"):
        d.encode(torch.zeros(1, 5, 4, 4))
    black = tmp_path / "black"
    demo_images(black, 6, size=(36, 40))
    from PIL import Image

    Image.new("RGB", (40, 40)).save(black / "black.png")
    with pytest.raises(features.NonFiniteActivationsError, match="black.png"):
        features.learn(tiny_model(nan_on_black=True), black, LAYER, 4, 2, steps=5, out=tmp_path / "nan",
                       progress=False, num_workers=0)


def test_batchtopk_and_nmf(tiny, photos, tmp_path):
    batch = features.learn(tiny, photos, LAYER, 12, 2, "batchtopk", steps=150, out=tmp_path / "b", progress=False,
                           num_workers=0)
    assert batch.metrics["r2"] > 0.3 and 0.5 < batch.metrics["l0"] < 6
    nmf = features.learn(tiny, tmp_path / "b" / "store", LAYER, 6, 0, "nmf", out=tmp_path / "n", progress=False)
    assert nmf.directions.shape == (6, 8) and nmf.metrics["r2"] > 0.3
    again = features.learn(tiny, tmp_path / "b" / "store", LAYER, 6, 0, "nmf", out=tmp_path / "n", progress=False)
    assert again.info["seconds"] == nmf.info["seconds"]       # loaded, not refitted
    codes = nmf.encode(torch.rand(2, 8, 3, 3))
    assert codes.shape == (2, 6, 3, 3) and bool((codes >= 0).all())


@pytest.mark.browser
def test_feature_site_in_chromium(site, page):
    root = site.path
    page.goto((root / "index.html").as_uri())
    assert page.locator("table.features tbody tr").count() == 12
    def column():
        return [float(v) for v in page.eval_on_selector_all("table.features tbody tr",
                                                             "rows => rows.map(r => r.dataset.firing)")]
    page.click('button[data-sort="firing"]')
    assert column() == sorted(column(), reverse=True)
    page.click('button[data-sort="firing"]')
    assert column() == sorted(column())
    live = [f for f in range(4) if features.top_examples(root, LAYER, f)]
    f = live[0]
    page.click(f'tbody a[href="2/feature-{f:05d}.html"]')
    assert page.url.endswith(f"/2/feature-{f:05d}.html")
    data = json.loads(page.locator("#feature-data").text_content())
    top = features.top_examples(root, LAYER, f)
    assert [e["image"] for e in data["examples"]] == [Path(t["image"]).name for t in top]
    assert page.locator(".vis img").count() == 6                      # guided first, unguided, four diverse
    assert page.locator(".vis img").first.get_attribute("alt") == "guided"
    captions = page.locator(".vis figcaption").all_text_contents()
    assert "guided by its top photos" in captions[0] and "path score" in captions[0]
    assert captions[1].startswith("unguided") and "path score" in captions[1]
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.remote_requests == []


MODEL_FILE = """
import sys
sys.path.insert(0, {tests!r})
from test_features import tiny_model


def make():
    return tiny_model()
"""


def test_command_line_with_a_model_file(photos, tmp_path, capsys):
    from luminate.cli import main

    path = tmp_path / "tiny_model.py"
    path.write_text(MODEL_FILE.format(tests=str(Path(__file__).parent)))
    common = [f"{path}:make", str(photos), "--layer", LAYER, "--k", "2", "--top", "2", "--steps", "2", "--size", "32",
              "--train-steps", "40", "--no-stability", "--unguided", "--quiet", "--cache", str(tmp_path / "cache")]
    assert main(["features", *common, "--features", "8", "--pages", "0:2", "-o", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out
    assert "8 features of 2 (topk, k = 2): held-out R²" in out and "2 pages" in out
    assert (tmp_path / "site" / "2" / "feature-00001.html").is_file()
    assert features.load(tmp_path / "site", LAYER).metrics.get("stability") is None
    assert main(["features", *common, "--features", "100000", "-o", str(tmp_path / "big")]) != 0
    assert "100000 features need at least 400000" in capsys.readouterr().err


def test_streamed_rows_give_the_same_dictionary(site, tiny, tmp_path):
    store = site.path / "data" / LAYER / "store"
    options = dict(steps=30, seed=4, holdout_every=5, progress=False)
    in_memory = features.learn(tiny, store, LAYER, 6, 2, out=tmp_path / "a", **options)
    streamed = features.learn(tiny, store, LAYER, 6, 2, out=tmp_path / "b", memory_rows=10, **options)
    assert torch.allclose(in_memory.directions, streamed.directions, atol=1e-6)
    assert in_memory.metrics["r2"] == pytest.approx(streamed.metrics["r2"], abs=1e-6)


def test_neurons_link_to_a_microscope_site(site, tmp_path):
    import copy

    from luminate.views.features import write_site

    (tmp_path / "microscope" / LAYER).mkdir(parents=True)
    linked = copy.copy(site)
    linked.path, linked.microscope = tmp_path / "site", tmp_path / "microscope"
    write_site(linked, progress=False)
    text = (tmp_path / "site" / LAYER / "feature-00000.html").read_text()
    channel = site.neurons(0)[0][0]
    assert f'href="../../microscope/{LAYER}/unit-{channel:05d}.html"' in text
    assert "/unit-0" not in (site.path / LAYER / "feature-00000.html").read_text()
