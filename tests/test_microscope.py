"""The Microscope: streaming per-unit top-k, resumable sharded collection, dead units, Ray, the static site."""

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

from luminate import models
from luminate.atlas import demo_images
from luminate.microscope import build, collect_examples, merge_top_k, parse_units, summarize, top_examples
from luminate.microscope import collect as collect_module
from luminate.units import examples as examples_module   # the examples pass (its peaks are counted)

TESTS = Path(__file__).parent
LAYER = "4"   # the second ReLU of the tiny network: [6, 32, 32] at 32 px


def tiny_model():
    """A 2-conv classifier at 32 px with a dead unit (0: all-negative weights and bias before a ReLU)."""
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        net[2].weight[0] = -net[2].weight[0].abs()
        net[2].bias[0] = -1.0
        net[3].weight[0] = 1.0
        net[3].bias[0] = -5.0
    return models.wrap(net, 32, value_range=(0, 1), labels=["ant", "bee", "cat", "dog", "eel"], name="tiny")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return demo_images(tmp_path_factory.mktemp("photos"), 22, size=(36, 56), bad_files=True)


def brute_force(model, folder, layer):
    """Every readable image's maximum per unit and its position, computed directly: ([N, C], [N, C], names)."""
    from luminate.data.inputs import image_set

    images = image_set(folder)
    values, where, names = [], [], []
    for i in range(len(images)):
        try:
            x = images.load(i, model.contract)[None]
        except ValueError:
            continue
        from luminate.activations import activations

        act = activations(model, x, layer)
        peak, arg = act.flatten(2).max(2)
        values.append(peak[0])
        where.append(arg[0])
        names.append(str(images.path(i)))
    return torch.stack(values).numpy(), torch.stack(where).numpy(), names


def test_streaming_top_k_equals_brute_force(tiny, photos, tmp_path):
    examples = collect_examples(tiny, photos, LAYER, tmp_path / "a", units="1:4", top_k=4, batch_size=5,
                                shard_images=6, progress=False, num_workers=0)
    assert [name for name, _ in examples.skipped] == ["broken.jpg", "empty.jpg", "notes.png"]
    values, where, names = brute_force(tiny, photos, LAYER)
    width = 32
    for unit in range(6):
        order = sorted(range(len(names)), key=lambda i: (-values[i, unit], i))[:4]
        got = top_examples(tmp_path / "a", LAYER, unit)
        assert [g["image"] for g in got] == [names[i] for i in order]
        np.testing.assert_allclose([g["value"] for g in got], values[order, unit], rtol=1e-5, atol=1e-6)
        if values[order[0], unit] > 0:   # where a unit is zero everywhere, any position is a maximum
            assert (got[0]["y"], got[0]["x"]) == divmod(int(where[order[0], unit]), width)
    # another batch size and shard size: the same results
    other = collect_examples(tiny, photos, LAYER, tmp_path / "b", units="1:4", top_k=4, batch_size=3,
                             shard_images=11, progress=False, num_workers=0)
    a, b = summarize(tmp_path / "a", LAYER), other.summary(LAYER)
    np.testing.assert_array_equal(a["top_images"], b["top_images"])
    np.testing.assert_allclose(a["top_values"], b["top_values"], rtol=1e-5)
    np.testing.assert_array_equal(a["hist_counts"], b["hist_counts"])


def test_merge_top_k_ties_and_padding():
    values = np.array([[3.0, 1.0]], np.float32)
    merged = merge_top_k(values, np.array([[0, 1]]), np.zeros((1, 2), np.int32),
                         np.array([[3.0, 2.0, 3.0]], np.float32), np.array([[5, 6, 7]]), np.array([[1, 2, 3]], np.int32), 4)
    assert merged[1].tolist() == [[0, 5, 7, 6]]          # equal values: the lower image index first
    assert merged[2].tolist() == [[0, 1, 3, 2]]


def test_dead_units_statistics_and_similarity(tiny, photos, tmp_path):
    collect_examples(tiny, photos, LAYER, tmp_path, units="0:6", top_k=3, progress=False, num_workers=0)
    s = summarize(tmp_path, LAYER)
    assert (tmp_path / "summary-4.npz").is_file()
    assert s["dead"][0] and not s["dead"][1:].any()
    assert s["firing"][0] == 0 and s["hist_counts"].sum(1).tolist() == [22] * 6
    assert s["attr_mean"].shape == (6, 5) and int(s["attr_count"]) == 22
    assert 0 not in s["similar_units"][1]               # a dead (constant) unit resembles nothing
    # the mean attribution of a unit is its gradient x activation to the logits, recomputed here for one image
    from luminate.microscope import unit_attribution

    x = tiny.preprocess(sorted(Path(photos).glob("demo*"))[0])
    net = tiny.network
    with torch.no_grad(), tiny.frozen():   # eval mode: BatchNorm must not update its statistics
        act = net[:5](x)
        expected = net[5:](act * torch.eye(6)[2][None, :, None, None]) - net[5:](torch.zeros_like(act))
    np.testing.assert_allclose(unit_attribution(tiny, x, LAYER, [2])[0, 0], expected[0], rtol=1e-4, atol=1e-5)


def test_parse_units_and_errors():
    assert parse_units("0:3", 10) == [0, 1, 2]
    assert parse_units("8:64", 10) == [8, 9]
    assert parse_units("7,3,3", 10) == [3, 7]
    assert parse_units(None, 3) == [0, 1, 2]
    with pytest.raises(IndexError, match="0..9"):
        parse_units("12", 10)
    with pytest.raises(ValueError, match="slice like"):
        parse_units("a:b", 10)
    with pytest.raises(FileNotFoundError, match="luminate microscope"):
        top_examples("/nonexistent/site", LAYER, 0)


@pytest.mark.slow
def test_sigkill_mid_collection_then_rerun(tiny, photos, tmp_path):
    out, marker = tmp_path / "killed", tmp_path / "marker"
    child = f"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
import torch
torch.set_num_threads(1)
from test_microscope import tiny_model, LAYER
from luminate.microscope import collect as c
from luminate.units import examples as e
original = e.peaks
def stop_in_second_shard(act):
    if json.loads(Path({str(out / 'examples' / 'manifest.json')!r}).read_text())["shards"]:
        Path({str(marker)!r}).write_text("in the second shard")
        time.sleep(600)
    return original(act)
e.peaks = stop_in_second_shard
c.collect_examples(tiny_model(), {str(photos)!r}, LAYER, {str(out)!r}, units="1:3", top_k=4, batch_size=4,
                   shard_images=8, progress=False, num_workers=0)
"""
    proc = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "the child ended before the second shard"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed = json.loads((out / "examples" / "manifest.json").read_text())
    assert [s["index"] for s in killed["shards"]] == [0]
    first = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "examples" / "shards" / "00000").iterdir()}
    seen = []
    original = examples_module.peaks

    def counting(act):
        seen.append(act.shape[0])
        return original(act)

    examples_module.peaks = counting
    try:
        resumed = collect_examples(tiny, photos, LAYER, out, units="1:3", top_k=4, batch_size=4, shard_images=8,
                                   progress=False, num_workers=0)
    finally:
        examples_module.peaks = original
    readable_in_first = 8 - len(killed["shards"][0]["skipped"])
    assert sum(seen) == 22 - readable_in_first          # only the images of the unfinished shards
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first} == first
    fresh = collect_examples(tiny, photos, LAYER, tmp_path / "fresh", units="1:3", top_k=4, progress=False,
                             num_workers=0)
    a, b = resumed.summary(LAYER), fresh.summary(LAYER)
    for field in ("top_images", "top_argmax", "hist_counts", "similar_units"):
        np.testing.assert_array_equal(a[field], b[field])
    np.testing.assert_allclose(a["attr_mean"], b["attr_mean"], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import the tests folder
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}})
    yield ray
    ray.shutdown()


def flaky_collect(marker: str, *args):
    """A collection task whose first attempt kills its worker process."""
    if not os.path.exists(marker):
        Path(marker).write_text("died once")
        os._exit(1)
    return collect_module._collect_task(*args)


@pytest.mark.slow
def test_ray_matches_in_process_and_survives_a_killed_worker(ray_local, tiny, photos, tmp_path):
    from luminate.parallel import run_tasks

    common = dict(units="1:3", top_k=4, batch_size=4, shard_images=13, progress=False)
    local = collect_examples(tiny, photos, LAYER, tmp_path / "local", num_workers=0, **common)
    on_ray = collect_examples(tiny, photos, LAYER, tmp_path / "ray", ray="local", **common)
    a, b = local.summary(LAYER), on_ray.summary(LAYER)
    for field in ("top_images", "top_argmax", "hist_counts", "similar_units"):
        np.testing.assert_array_equal(a[field], b[field])
    np.testing.assert_allclose(a["top_values"], b["top_values"], rtol=1e-6)
    # a worker that dies mid-task is replaced and the task retried; the driver then finds every shard done
    out = tmp_path / "flaky"
    collect_examples(tiny, photos, LAYER, out, shards=[], **common)   # creates the stores only
    from luminate.data import PassSettings
    from luminate.microscope import ExamplesSettings

    task = (ExamplesSettings(top_k=4, shard_images=13), {LAYER: [1, 2]}, {LAYER: [1, 2]},
            PassSettings(batch_size=4, num_workers=0, progress=False))
    tasks = [(str(tmp_path / f"died-{k}"), tiny, str(photos), [LAYER], str(out), *task, k) for k in range(2)]
    assert run_tasks(flaky_collect, tasks, ray="local", max_retries=2, progress=False) == [0, 1]
    assert all((tmp_path / f"died-{k}").exists() for k in range(2))
    seen = []
    original = examples_module.peaks
    examples_module.peaks = lambda act: seen.append(1) or original(act)
    try:
        finished = collect_examples(tiny, photos, LAYER, out, **common)
    finally:
        examples_module.peaks = original
    assert not seen and finished.complete
    np.testing.assert_array_equal(finished.summary(LAYER)["top_images"], a["top_images"])
    # the same engine collects atlas stores: Ray shards equal in-process shards
    from luminate.atlas import collect

    kwargs = dict(batch_size=4, shard_size=13, progress=False)
    with pytest.warns(UserWarning, match="unreadable"):
        here = collect(tiny, photos, LAYER, tmp_path / "atlas-here", num_workers=0, **kwargs)
    with pytest.warns(UserWarning, match="unreadable"):
        there = collect(tiny, photos, LAYER, tmp_path / "atlas-ray", ray="local", **kwargs)
    np.testing.assert_array_equal(here.meta()["image"], there.meta()["image"])
    np.testing.assert_allclose(here.activations(), there.activations(), rtol=1e-6)
    np.testing.assert_allclose(here.attributions().astype(float), there.attributions().astype(float), rtol=1e-3)


@pytest.fixture(scope="module")
def site(tiny, photos, tmp_path_factory):
    from luminate.views.microscope import write_site

    out = tmp_path_factory.mktemp("site")
    built = build(tiny, photos, out, layers=[LAYER], units="0:4", top_k=3, steps=3, size=32, units_per_batch=2,
                  cache_dir=out.parent / "cache", progress=False, num_workers=0)
    write_site(built, progress=False)
    return built


def test_site_pages_and_rerun_writes_nothing(site, tiny, photos, tmp_path):
    from luminate.views.microscope import write_site

    root = site.path
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    assert pages == ["4/index.html", "4/unit-00000.html", "4/unit-00001.html", "4/unit-00002.html",
                     "4/unit-00003.html", "index.html"]
    assert sorted(site.renders[LAYER]) == [1, 2, 3]                     # the dead unit 0 is not rendered
    dead = (root / "4" / "unit-00000.html").read_text()
    assert "dead unit" in dead and "Feature visualizations" not in dead
    for path in root.rglob("*.html"):
        text = path.read_text()
        assert "http://" not in text and "https://" not in text
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = build(tiny, photos, root, layers=[LAYER], units="0:4", top_k=3, steps=3, size=32, units_per_batch=2,
                  cache_dir=root.parent / "cache", progress=False, num_workers=0)
    write_site(again, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


@pytest.mark.browser
def test_site_in_chromium(site, page):
    root = site.path
    page.goto((root / "index.html").as_uri())
    page.click("text=4")
    assert page.url.endswith("/4/index.html")
    assert page.locator("a.unit").count() == 4
    page.fill("#search", "2")
    assert page.locator("a.unit:not(.hidden)").count() == 1
    raised = site.classes(LAYER, 1)[0]
    if raised:
        page.fill("#search", raised[0][0])
        assert page.locator('a.unit[data-unit="1"]:not(.hidden)').count() == 1
    page.fill("#search", "")
    page.click('a.unit[data-unit="1"]')
    assert page.url.endswith("/4/unit-00001.html")
    assert page.locator(".examples figure").count() == 3
    data = json.loads(page.locator("#unit-data").text_content())
    assert [e["image"] for e in data["examples"]] == [Path(t["image"]).name for t in top_examples(root, LAYER, 1)]
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10000)
    page.click("text=unit 2 →")
    assert page.url.endswith("/4/unit-00002.html")
    assert page.remote_requests == []


def test_sanity_scores_on_unit_pages(tiny, photos, tmp_path):
    pytest.importorskip("luminate.analysis.sanity")
    from luminate.views.microscope import write_site

    built = build(tiny, photos, tmp_path / "site", layers=[LAYER], units="0:3", top_k=3, steps=2, size=32,
                  units_per_batch=2, cache_dir=tmp_path / "cache", progress=False, num_workers=0, sanity=True)
    assert sorted(built.sanity) == [(LAYER, 1), (LAYER, 2)]           # rendered units only (0 is dead)
    write_site(built, progress=False)
    assert "Sanity: path score" in (tmp_path / "site" / "4" / "unit-00001.html").read_text()
    assert "Sanity" not in (tmp_path / "site" / "4" / "unit-00000.html").read_text()
