"""The whole model under the Microscope: --layers all, bottom / quantile examples, inputs (circuits), Ray Data."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from luminate import microscope, models
from luminate.atlas import demo_images
from luminate.data.store import ActivationStore
from luminate.microscope.circuits import connection_matrix, linear_weight

sys.path.insert(0, str(Path(__file__).parent))
from test_microscope import LAYER, brute_force, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):   # the same set as test_microscope's
    return demo_images(tmp_path_factory.mktemp("photos"), 22, size=(36, 56), bad_files=True)


def test_bottom_and_quantile_examples(tiny, photos, tmp_path):
    values, _, names = brute_force(tiny, photos, LAYER)
    microscope.collect_examples(tiny, photos, LAYER, tmp_path / "a", units="1:3", top_k=4, batch_size=5,
                                shard_images=6, progress=False, num_workers=0)
    microscope.collect_examples(tiny, photos, LAYER, tmp_path / "b", units="1:3", top_k=4, batch_size=7,
                                shard_images=50, progress=False, num_workers=0)
    for unit in range(1, 6):
        order = sorted(range(len(names)), key=lambda i: (values[i, unit], i))[:4]
        bottom = microscope.top_examples(tmp_path / "a", LAYER, unit, which="bottom")
        assert [b["image"] for b in bottom] == [names[i] for i in order]
        assert [b["value"] for b in bottom] == pytest.approx([float(values[i, unit]) for i in order], abs=1e-6)
        quant = microscope.top_examples(tmp_path / "a", LAYER, unit, which="quantiles")
        # samples: distinct images, lowest first, each value inside its stratum, every stratum represented
        assert len({q["image"] for q in quant}) == len(quant) >= 5
        assert [q["value"] for q in quant] == sorted(q["value"] for q in quant)
        edges = microscope.summarize(tmp_path / "a", LAYER)["quant_edges"][unit]
        for q in quant:
            assert edges[q["stratum"]] <= q["value"] <= edges[q["stratum"] + 1]
            assert q["value"] == pytest.approx(float(values[names.index(q["image"]), unit]), abs=1e-6)
        occupied = {int((values[:, unit][i] >= edges[1:-1]).sum()) for i in range(len(names))}
        assert {q["stratum"] for q in quant} == occupied and len(occupied) >= 3
        # the sample depends on the images only, not on shards or batches
        other = microscope.top_examples(tmp_path / "b", LAYER, unit, which="quantiles")
        assert [q["image"] for q in other] == [q["image"] for q in quant]
    with pytest.raises(ValueError, match="which"):
        microscope.top_examples(tmp_path / "a", LAYER, 1, which="middle")


def test_layers_all_and_typos_stop_before_work(tiny, photos, tmp_path):
    assert microscope.resolve_layers(tiny, "all") == tiny.default_layers()
    with pytest.raises(ValueError) as info:
        microscope.build(tiny, photos, tmp_path / "site", layers=["4", "blokcs.3", "9x"], progress=False)
    assert "'blokcs.3'" in str(info.value) and "'9x'" in str(info.value) and "luminate layers" in str(info.value)
    assert not (tmp_path / "site").exists()


def test_a_site_with_other_settings_is_replaced_out_loud(tiny, photos, tmp_path, caplog):
    site = tmp_path / "site"
    microscope.collect_examples(tiny, photos, "1", site, units="0:2", progress=False, num_workers=0)
    assert microscope.layers(site) == [("1", 8)]
    with caplog.at_level(logging.WARNING, logger="luminate.data"):
        microscope.collect_examples(tiny, photos, LAYER, site, units="0:2", progress=False, num_workers=0)
    assert "replacing the store" in caplog.text and "layers" in caplog.text
    assert microscope.layers(site) == [(LAYER, 6)]           # the new run only, nothing of the old one mixed in
    with pytest.raises(Exception, match="'1'"):
        microscope.top_examples(site, "1", 0)


def test_inputs_by_weight_and_by_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.Conv2d(5, 3, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    model = models.wrap(net, 16, value_range=(0, 1), name="chain")
    x = torch.rand(3, 3, 16, 16)
    matrix, how = connection_matrix(model, "1", "2", x)          # ReLU -> 1x1 conv: the weights
    assert how == "weight" and np.allclose(matrix, net[2].weight[:, :, 0, 0].detach().numpy())
    matrix, how = connection_matrix(model, "2", "3", x)          # 3x3 conv: gradient x activation
    assert how == "gradient x activation" and matrix.shape == (3, 5)
    with torch.no_grad():
        a = net[2](net[1](net[0](x)))
    a.requires_grad_(True)
    out = net[3](a).mean((2, 3)).mean(0)[1]
    (grad,) = torch.autograd.grad(out, a)
    assert np.allclose(matrix[1], (grad * a).sum((2, 3)).mean(0).detach().numpy(), atol=1e-6)
    bn = nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU6()).eval()
    bn[1].running_var.fill_(4.0)
    assert torch.allclose(linear_weight(bn), bn[0].weight[:, :, 0, 0] / (4.0 + bn[1].eps) ** 0.5)
    assert linear_weight(nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(6, 6, 1))) is None


def test_whole_model_site_has_a_page_per_unit(tiny, photos, tmp_path):
    from luminate.views.microscope import write_site

    site = microscope.build(tiny, photos, tmp_path / "site", layers="all", units=None, render="none", top_k=3,
                            progress=False, cache_dir=tmp_path / "cache")
    root = write_site(site, progress=False).parent
    listed = microscope.layers(root)
    assert [name for name, _ in listed] == tiny.default_layers()
    pages = sorted(root.rglob("unit-*.html"))
    assert len(pages) == sum(n for _, n in listed)
    assert site.renders and not any(site.renders.values())
    upper = listed[-1][0]
    html_text = (root / upper / "unit-00002.html").read_text()
    for section in ("Bottom examples", "Across the range", "Inputs", "Top examples"):
        assert section in html_text
    assert "Not visualized in this run" in html_text or "Not rendered:" in html_text
    data = json.loads(html_text.split('id="unit-data">')[1].split("</script>")[0])
    assert data["inputs"] == [{k: e[k] for k in ("layer", "unit", "weight")}
                              for e in microscope.inputs(root, upper, 2)]
    assert data["inputs"] and data["inputs"][0]["layer"] == listed[-2][0]
    for src in {s.split('"')[0] for s in html_text.split('src="../')[1:]}:
        assert (root / src).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    again = microscope.build(tiny, photos, tmp_path / "site", layers="all", units=None, render="none", top_k=3,
                             progress=False, cache_dir=tmp_path / "cache")
    write_site(again, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"} == stamps


@pytest.mark.browser
def test_unit_page_sections_in_chromium(tiny, photos, tmp_path, page):
    from luminate.views.microscope import write_site

    site = microscope.build(tiny, photos, tmp_path / "site", layers=["1", LAYER], units=None, render="0:1",
                            top_k=3, steps=4, size=32, progress=False, cache_dir=tmp_path / "cache")
    root = write_site(site, progress=False).parent
    page.goto((root / LAYER / "unit-00003.html").as_uri())
    assert page.locator(".examples-top .thumb").count() == 3
    assert page.locator(".examples-bottom .thumb").count() == 3
    assert page.locator(".examples-quantiles .stratum").count() == 5
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    links = page.locator(".inputs a.unit-link")
    assert links.count() == len(microscope.inputs(root, LAYER, 3))
    links.first.click()
    first = microscope.inputs(root, LAYER, 3)[0]
    assert page.url.endswith(f"/1/unit-{first['unit']:05d}.html")
    assert page.locator(".outputs a.unit-link").count() >= 1
    assert page.remote_requests == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-6)
    return np.array_equal(a, b)


@pytest.mark.slow
def test_ray_data_on_a_two_node_local_cluster(tiny, photos, tmp_path):
    if not os.environ.get("LUMINATE_RAY_FRESH_PROCESS"):
        # Ray Data keeps per-process state across ray.shutdown(): after an earlier test's local instance its actor
        # pool is cancelled before it starts. The cluster run gets a fresh interpreter of its own.
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"{__file__}::test_ray_data_on_a_two_node_local_cluster"],
                             env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "LUMINATE_RAY_FRESH_PROCESS": "1"}, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        return
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.shutdown()   # an earlier test's local Ray instance must not take the place of the cluster
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray command is not installed next to this Python")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ADDRESS="", OMP_NUM_THREADS="1")
    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="lum-ray-", dir="/tmp"))   # short: Ray's socket paths have a length limit
    try:
        subprocess.run([str(ray_bin), "start", "--head", "--port", str(port), "--num-cpus", "1",
                        "--include-dashboard", "false", "--node-ip-address", "127.0.0.1", f"--temp-dir={temp}"],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([str(ray_bin), "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                        "--node-ip-address", "127.0.0.1", f"--temp-dir={temp}"], env=env, check=True,
                       capture_output=True, timeout=120)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        one = microscope.collect_examples(tiny, photos, ["1", LAYER], tmp_path / "one", units="0:2", top_k=3,
                                          batch_size=5, shard_images=6, progress=False, num_workers=0)
        two = microscope.collect_examples(tiny, photos, ["1", LAYER], tmp_path / "two", units="0:2", top_k=3,
                                          batch_size=5, shard_images=6, progress=False, ray=f"127.0.0.1:{port}")
        assert two.complete and len(two.store.shards) == len(one.store.shards) == 5
        for name in ("examples", "attribution"):
            for (ka, a), (kb, b) in zip(ActivationStore(tmp_path / "one" / name).iter_shards(),
                                        ActivationStore(tmp_path / "two" / name).iter_shards()):
                # actors run 1 torch thread, the driver may run more: float sums agree to rounding, the rest exactly
                assert ka == kb and all(_same(np.asarray(a[f]), np.asarray(b[f])) for f in a), name
        assert two.skipped == one.skipped
        # resumable: drop a shard from the manifest, rerun on the cluster, get it back identical
        before = (tmp_path / "two" / "examples" / "manifest.json").read_text()
        manifest = json.loads(before)
        manifest["shards"] = [s for s in manifest["shards"] if s["index"] != 2]
        (tmp_path / "two" / "examples" / "manifest.json").write_text(json.dumps(manifest))
        again = microscope.collect_examples(tiny, photos, ["1", LAYER], tmp_path / "two", units="0:2", top_k=3,
                                            batch_size=5, shard_images=6, progress=False,
                                            ray=f"127.0.0.1:{port}")
        assert [s["index"] for s in again.store.shards] == [0, 1, 2, 3, 4]
        assert microscope.top_examples(tmp_path / "two", LAYER, 1) == microscope.top_examples(tmp_path / "one",
                                                                                              LAYER, 1)
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(temp: Path) -> None:
    """End the processes of this test's cluster only (their command lines name its temp folder); `ray stop`
    would end every Ray process on the machine."""
    def ours():
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if str(temp).encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while ours() and time.time() < deadline:
            time.sleep(0.2)


def _descendants(root: int) -> list[int]:
    """Process ids below ``root`` (this test's own Ray workers only)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.slow
def test_ray_data_survives_a_killed_actor(photos, tmp_path):
    pytest.importorskip("ray.data")
    import threading

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 48, 5, padding=2), nn.ReLU(), nn.Conv2d(48, 48, 5, padding=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 3))
    model = models.wrap(net, 160, value_range=(0, 1), name="slow")   # ~0.2 s per image: time to kill an actor
    microscope.collect_examples(model, photos, "3", tmp_path / "one", units="0:2", top_k=3, batch_size=1,
                                shard_images=4, attribution_images=0, progress=False, num_workers=0)
    killed = []

    def kill_one_actor():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            manifest = tmp_path / "two" / "examples" / "manifest.json"
            if manifest.is_file() and json.loads(manifest.read_text()).get("shards"):
                for pid in _descendants(os.getpid()):
                    try:
                        title = (Path("/proc") / str(pid) / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"MapWorker" in title and b"PassActor" in title:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_actor, daemon=True)
    watcher.start()
    two = microscope.collect_examples(model, photos, "3", tmp_path / "two", units="0:2", top_k=3, batch_size=1,
                                      shard_images=4, attribution_images=0, progress=False, ray="local", num_cpus=2)
    watcher.join(timeout=5)
    assert killed, "no model actor was found to kill"
    assert two.complete
    for (ka, a), (kb, b) in zip(ActivationStore(tmp_path / "one" / "examples").iter_shards(),
                                ActivationStore(tmp_path / "two" / "examples").iter_shards()):
        assert ka == kb and all(np.allclose(np.asarray(a[f]), np.asarray(b[f]), atol=1e-5) for f in a)
