"""Atlas data side: image sets, collection (forward-AD attributions), the resumable store, layouts."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from luminate import atlas
from luminate.data.inputs import image_loader
from luminate.data.store import StoreWriter, file_sha256
from luminate.images import UnreadableImageError

collect_module = sys.modules["luminate.atlas.collect"]

LAYER = "blocks.10"  # 112 channels, 14x14 at 224
N_GOOD = 40
BAD = {"broken.jpg": b"\xff\xd8\xff\xe0 not a jpeg", "empty.png": b"", "sub/text.png": b"hello"}
SETTINGS = dict(batch_size=8, shard_size=16)  # 3 shards of 16 images (43 files)


def _make_images(folder: Path, sources: list[str], n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    for k in range(n):
        with Image.open(sources[k % len(sources)]) as im:
            s = rnd.randint(96, 400)
            x, y = rnd.randint(0, im.width - s), rnd.randint(0, im.height - s)
            crop = im.crop((x, y, x + s, y + s)).resize((rnd.randint(48, 96), rnd.randint(48, 96)))
        if rnd.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / ("sub" if k % 4 == 0 else "") / f"img{k:03d}.{'png' if k % 5 == 0 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, flower_path, china_path) -> Path:
    folder = tmp_path_factory.mktemp("images")
    _make_images(folder, [flower_path, china_path], N_GOOD)
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def store(lite0, image_dir, tmp_path_factory):
    """The reference collection: one uninterrupted run (2 decoding workers)."""
    out = tmp_path_factory.mktemp("stores") / "ref"
    with pytest.warns(atlas.UnreadableImagesWarning, match="broken.jpg"):
        return atlas.collect(lite0, image_dir, LAYER, out, progress=False, num_workers=2, **SETTINGS)


# ----- collection ----------------------------------------------------------------------------------


def test_image_sets_and_the_loader(lite0, image_dir, flower_path):
    folder = atlas.ImageFolder(image_dir)
    assert len(folder) == N_GOOD + len(BAD) and folder.names() == sorted(folder.names())
    assert "sub/text.png" in folder.names() and "sub/img000.png" in folder.names()
    assert folder.load(folder.names().index("img001.jpg"), lite0.contract).shape == (3, 224, 224)
    with pytest.raises(UnreadableImageError, match="empty"):
        folder.load(folder.names().index("empty.png"))
    assert atlas.image_set(str(image_dir)).fingerprint() == folder.fingerprint()
    assert isinstance(atlas.image_set([flower_path]), atlas.ImageList)
    batch = atlas.image_set(torch.rand(3, 3, 20, 30))
    assert len(batch) == 3 and batch.load(2, lite0.contract).shape == (3, 224, 224)
    with pytest.raises(TypeError, match="cannot make an image set"):
        atlas.image_set(42)
    broken = folder.names().index("broken.jpg")
    good = [folder.names().index(n) for n in ("img001.jpg", "sub/img000.png")]
    loader = image_loader(folder, lite0.contract, [[good[0], broken, good[1]]], num_workers=0)
    (only,) = list(loader)
    assert only.indices.tolist() == good and only.images.shape == (2, 3, 224, 224)
    assert [i for i, _ in only.skipped] == [broken] and "broken.jpg" in only.skipped[0][1]


def test_unreadable_files_are_skipped_and_named(store, image_dir):
    assert {name for name, _ in store.skipped} == set(BAD)
    assert all(reason for _, reason in store.skipped)
    summary = store.summary()
    for name in BAD:
        assert name in summary
    assert len(store) == N_GOOD and store.complete
    names = store.image_names()
    assert len(names) == N_GOOD + len(BAD)
    rows_images = [names[i] for i in store.meta()["image"]]
    assert sorted(rows_images) == sorted(n for n in names if n not in BAD)
    assert store.image_path(store.meta()["image"][0]).is_file()
    acts, attr = store.activations(), store.attributions()
    assert acts.shape == (N_GOOD, 112) and acts.dtype == np.float32
    assert attr.shape == (N_GOOD, 1000) and attr.dtype == np.float16
    yx = store.positions()
    assert yx.shape == (N_GOOD, 2) and yx.min() >= 0 and yx.max() < 14
    meta = store.meta()
    assert meta["top_classes"].shape == (N_GOOD, 5) and (np.diff(meta["top_logits"], axis=1) <= 0).all()
    assert (meta["label"] == -1).all()
    store.verify()


def test_positions_depend_only_on_seed_and_image(store):
    meta = store.meta()
    expected = np.stack([atlas.draw_positions(0, int(i), (14, 14), 1)[0] for i in meta["image"]])
    assert np.array_equal(store.positions(), expected)
    assert len({tuple(p) for p in expected}) > 10  # spread over the grid, row/column 0 allowed
    several = atlas.draw_positions(3, 7, (14, 14), 20)
    assert len({tuple(p) for p in several}) == 20  # distinct within an image
    assert np.array_equal(several, atlas.draw_positions(3, 7, (14, 14), 20))


def test_forward_ad_attribution_equals_gradient(lite0, store, image_dir):
    meta = store.meta()
    rows = np.arange(3)
    images = torch.cat([lite0.preprocess(store.image_path(meta["image"][r])) for r in rows])
    yx = torch.as_tensor(store.positions(rows=rows), dtype=torch.int64)
    act, logits, attribution = collect_module.dual_forward(lite0, images, lite0.layer(LAYER), yx)
    assert attribution.shape == (3, 1000)

    captured = {}

    def hook(module, inputs, output):
        captured["act"] = output.detach().requires_grad_(True)
        return captured["act"]

    handle = lite0.layer(LAYER).register_forward_hook(hook)
    try:
        out = lite0(images)
    finally:
        handle.remove()
    masked = collect_module.position_mask(captured["act"].detach(), yx)
    for c in (int(meta["top_classes"][0, 0]), 1, 999):
        (grad,) = torch.autograd.grad(out[:, c].sum(), captured["act"], retain_graph=True)
        expected = (grad * masked).sum(dim=(1, 2, 3))
        torch.testing.assert_close(attribution[:, c], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, out.detach())
    # the store holds the same values (activations exactly, attributions rounded to float16)
    np.testing.assert_allclose(store.activations(rows=rows), collect_module._at(act, yx).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store.attributions(rows=rows).astype(np.float32), attribution.numpy(),
                               rtol=2e-3, atol=1e-3)


def test_dataset_source_several_layers_without_attribution(lite0, tmp_path, flower_path):
    good = torch.from_numpy(np.array(Image.open(flower_path).resize((80, 60)))).permute(2, 0, 1)  # uint8 CHW

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 1:
                raise RuntimeError("this item is broken")
            if i == 2:
                return good.float() * 2, 7  # not in [0, 1]: skipped, not fatal
            return good.flip(-1) if i else good, 10 + i

    with pytest.warns(atlas.UnreadableImagesWarning, match=r"dataset\[1\].*this item is broken"):
        store = atlas.collect(lite0, Photos(), ["blocks.10", "blocks.12"], tmp_path / "ds", positions_per_image=3,
                              attribute=False, progress=False, num_workers=0)
    assert [name for name, _ in store.skipped] == ["dataset[1]", "dataset[2]"]
    assert len(store) == 6 and not store.has_attributions
    meta = store.meta()
    assert meta["image"].tolist() == [0, 0, 0, 3, 3, 3] and meta["position"].tolist() == [0, 1, 2] * 2
    assert meta["label"].tolist() == [10, 10, 10, 13, 13, 13]
    assert store.activations("blocks.12").shape == (6, 192)
    # the same image region in both layers: the 14x14 cell's centre mapped onto the 7x7 grid
    assert np.array_equal(store.positions("blocks.12"), store.positions("blocks.10") // 2)
    with pytest.raises(ValueError, match="several layers"):
        store.activations()
    with pytest.raises(ValueError, match="without attributions"):
        store.attributions("blocks.10")
    assert store.image_path(0) is None


def test_the_old_attribution_name_still_works_for_one_release(lite0, tmp_path, flower_path):
    """``attribute`` is the one spelling; ``attribution=`` warns (DeprecationWarning) and means the same."""
    from luminate.atlas import CollectSettings

    with pytest.warns(DeprecationWarning, match="attribute="):
        old = CollectSettings(attribution=False, seed=3)
    assert old == CollectSettings(attribute=False, seed=3)
    with pytest.warns(DeprecationWarning, match="attribute="):
        store = atlas.collect(lite0, [flower_path], LAYER, tmp_path / "old", attribution=False, progress=False,
                              num_workers=0)
    assert len(store) == 1 and not store.has_attributions
    with pytest.raises(ValueError, match="attribute=True"):
        store.attributions(LAYER)


def test_other_settings_are_refused_then_overwritten(lite0, tmp_path, image_dir, store, caplog):
    with pytest.raises(atlas.StoreSettingsError, match="seed"):
        atlas.collect(lite0, image_dir, LAYER, store.path, seed=1, progress=False, **SETTINGS)
    assert atlas.ActivationStore.open(store.path).settings["seed"] == 0
    paths = sorted(image_dir.rglob("img00[0-1].*"))
    small = tmp_path / "small"
    first = atlas.collect(lite0, paths, LAYER, small, attribute=False, progress=False, num_workers=0)
    assert len(first) == 2 and first.settings["seed"] == 0
    with caplog.at_level(logging.WARNING, logger="luminate.data"):
        second = atlas.collect(lite0, paths, LAYER, small, seed=5, attribute=False, progress=False,
                               num_workers=0, overwrite=True)
    assert second.settings["seed"] == 5 and len(second) == 2
    assert "replacing the store" in caplog.text and "seed" in caplog.text   # replaced out loud, not silently
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an activation store"):
        atlas.collect(lite0, paths, LAYER, tmp_path / "notes", attribute=False, progress=False, overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def _shard_files(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, file_sha256(p))
            for p in sorted((path / "shards").rglob("*.npy"))}


@pytest.mark.slow
def test_resume_after_sigkill(lite0, image_dir, store, tmp_path):
    out, marker = tmp_path / "resumed", tmp_path / "marker"
    child = Path(__file__).with_name("atlas_collect_child.py")
    proc = subprocess.Popen([sys.executable, str(child), str(image_dir), str(out), str(marker),
                             str(SETTINGS["batch_size"]), str(SETTINGS["shard_size"])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, f"the collecting process ended early: {proc.stdout.read().decode()[-2000:]}"
            assert time.time() < deadline, "the collecting process never reached its second shard"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in killed["shards"]] == [0]
    before = _shard_files(out)
    assert set(before) == {f"shards/00000/{f}" for f in killed["shards"][0]["files"]}

    with pytest.warns(atlas.UnreadableImagesWarning):
        resumed = atlas.collect(lite0, image_dir, LAYER, out, progress=False, num_workers=0, **SETTINGS)
    after = _shard_files(out)
    assert {k: after[k] for k in before} == before  # finished shard: not rewritten (mtime) nor changed (checksum)
    assert resumed.manifest["shards"][0] == killed["shards"][0]
    assert resumed.complete and len(resumed) == len(store)
    assert np.array_equal(resumed.activations(), store.activations())
    assert np.array_equal(resumed.attributions(), store.attributions())
    for field in ("image", "position", "top_classes"):
        assert np.array_equal(resumed.meta()[field], store.meta()[field])
    assert resumed.skipped == store.skipped
    # a third run finds nothing to do and touches nothing
    atlas.collect(lite0, image_dir, LAYER, out, progress=False, num_workers=0, **SETTINGS)
    assert _shard_files(out) == after


# ----- the store -----------------------------------------------------------------------------------


def _synthetic_store(path: Path, n_shards: int, rows: int, channels: int) -> np.ndarray:
    header = {"model": "synthetic", "input": "-", "n_classes": 4, "labels": ["a", "b", "c", "d"],
              "layers": [{"name": "l", "key": "l", "channels": channels, "grid": [1, 1]}],
              "images": {"count": n_shards * rows, "kind": "dataset", "source": "synthetic", "root": None},
              "settings": {"attribution": True, "positions_per_image": 1, "n": n_shards}, "n_shards": n_shards,
              "shard_images": rows}
    writer = StoreWriter(path, header, [f"dataset[{i}]" for i in range(n_shards * rows)])
    rng = np.random.default_rng(0)
    full = []
    for k in range(n_shards):
        acts = rng.standard_normal((rows, channels)).astype(np.float32)
        full.append(acts)
        image = np.arange(k * rows, (k + 1) * rows)
        arrays = {"acts.l": acts, "attr.l": rng.standard_normal((rows, 4)).astype(np.float16),
                  "yx.l": np.zeros((rows, 2), np.int16), "image": image, "position": np.zeros(rows, np.int16),
                  "label": np.full(rows, -1), "top_classes": np.zeros((rows, 1), np.int32),
                  "top_logits": np.zeros((rows, 1), np.float32)}
        assert writer.write_shard(k, arrays, (k * rows, (k + 1) * rows))
    assert not writer.write_shard(0, arrays, (0, rows))  # a listed shard is never replaced
    return np.concatenate(full)


def test_store_reading_is_lazy_and_memory_bounded(tmp_path):
    n_shards, rows, channels = 12, 2000, 128  # 1 MB of activations per shard, 12 MB in all
    expected = _synthetic_store(tmp_path / "s", n_shards, rows, channels)
    store = atlas.ActivationStore.open(tmp_path / "s")
    assert len(store) == n_shards * rows and store.complete
    shard_bytes = rows * channels * 4

    tracemalloc.start()
    try:
        total = np.zeros(channels)
        for offset, fields in store.iter_shards(["acts.l"]):
            total += fields["acts.l"].sum(axis=0, dtype=np.float64)
        _, peak_iter = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        picked = np.random.default_rng(1).choice(len(store), 500, replace=False)
        some = store.activations(rows=picked)
        _, peak_rows = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        everything = store.activations()
        _, peak_all = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(total, expected.sum(axis=0, dtype=np.float64), rtol=1e-6)
    assert np.array_equal(some, expected[picked]) and np.array_equal(everything, expected)
    assert peak_iter < shard_bytes / 2, peak_iter  # memory-mapped: no shard is copied
    assert peak_rows < 500 * channels * 4 * 3 + 200_000, peak_rows
    assert peak_all >= expected.nbytes  # (tracemalloc does see numpy's allocations)
    assert store.class_index("c") == 2


def test_store_detects_damage_and_cleans_uncommitted_work(tmp_path):
    path = tmp_path / "s"
    _synthetic_store(path, 3, 10, 4)
    store = atlas.ActivationStore(path)
    store.verify()
    victim = path / "shards" / "00001" / "acts.l.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(OSError, match="checksum"):
        store.verify()
    # leftovers of a killed writer: an unlisted shard folder and a temporary folder of a dead process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_tmp = path / "shards" / f".tmp-00007-{sys.modules['luminate.data.store']._host()}-{dead.pid}"
    stale_tmp.mkdir()
    (path / "shards" / "00005").mkdir()
    StoreWriter(path, {**store.manifest, "shards": []}, store.image_names())
    assert not stale_tmp.exists() and not (path / "shards" / "00005").exists()
    assert (path / "shards" / "00000").exists()
    # the writer resuming the store checked each shard: the damaged one is dropped, to be collected again
    assert not (path / "shards" / "00001").exists()
    assert [s["index"] for s in atlas.ActivationStore(path).shards] == [0, 2]
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        atlas.ActivationStore(tmp_path / "nothing")


# ----- layout --------------------------------------------------------------------------------------


def test_whitening_inverts_the_uncentred_covariance(store):
    rng = np.random.default_rng(0)
    acts = (rng.standard_normal((3000, 24)) @ rng.standard_normal((24, 24)) + 0.5).astype(np.float32)
    s = atlas.whitening_matrix(acts)
    cov = acts.astype(np.float64).T @ acts / len(acts)
    np.testing.assert_allclose(s @ cov, np.eye(24), atol=2e-3)
    np.testing.assert_allclose(s, s.T, atol=1e-5)
    # fewer rows than channels (40 x 112): a pseudo-inverse, finite, S C S = S
    real = store.activations()
    s = atlas.whitening_matrix(real).astype(np.float64)
    cov = real.astype(np.float64).T @ real / len(real)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s @ cov @ s, s, atol=1e-3 * np.abs(s).max())
    ridge = atlas.whitening_matrix(real, ridge=0.1)
    assert np.abs(ridge).max() < np.abs(s).max()


def test_normalize_layout_range():
    rng = np.random.default_rng(0)
    layout = rng.standard_normal((500, 2)) * [1, 100]
    layout[:3] = [[1e6, -1e6], [-1e6, 1e6], [50, 50]]  # outliers are clipped, not stretched over
    out = atlas.normalize_layout(layout)
    assert out.shape == (500, 2) and out.min() == 0 and out.max() == 1
    np.testing.assert_allclose(out.min(axis=0), 0) and np.testing.assert_allclose(out.max(axis=0), 1)
    inner = out[3:]
    assert (inner.max(axis=0) - inner.min(axis=0) > 0.7).all()  # the bulk keeps most of the square
    assert np.allclose(atlas.normalize_layout(np.ones((5, 2))), 0.5)
    assert atlas.normalize_layout(rng.standard_normal(50)).shape == (50,)


def test_bin_layout_counts_means_and_threshold():
    rng = np.random.default_rng(0)
    layout = rng.random((1000, 2))
    layout[0] = [1.0, 1.0]  # the far edge belongs to the last cell
    acts = rng.standard_normal((1000, 8)).astype(np.float32)
    cells = atlas.bin_layout(layout, acts, grid_size=5, min_count=0)
    assert sum(c.count for c in cells) == 1000 and len(cells) == 25
    members = np.concatenate([c.members for c in cells])
    assert sorted(members.tolist()) == list(range(1000))
    for c in cells:
        np.testing.assert_allclose(c.mean, acts[c.members].mean(axis=0), rtol=1e-5, atol=1e-6)
        assert (np.floor(layout[c.members] * 5).clip(0, 4) == [c.i, c.j]).all()
    assert any(0 in c.members and (c.i, c.j) == (4, 4) for c in cells)
    kept = atlas.bin_layout(layout, acts, grid_size=(10, 4), min_count=30)
    assert kept and all(c.count > 30 for c in kept)
    assert sum(c.count for c in kept) < 1000


def test_embed_methods_and_atlas_layout(store, caplog):
    acts = store.activations()
    with caplog.at_level(logging.INFO, logger="luminate.atlas"):
        layout = atlas.atlas_layout(acts, seed=0)
    assert layout.method == "tsne" and "t-SNE" in caplog.text  # small set: the fast fallback, and it says so
    assert layout.coords.shape == (N_GOOD, 2) and layout.coords.min() == 0 and layout.coords.max() == 1
    assert np.array_equal(atlas.atlas_layout(acts, seed=0).coords, layout.coords)
    coords, used = atlas.embed(acts, 1, "pca")
    assert used == "pca" and coords.shape == (N_GOOD, 1)
    cells = atlas.bin_layout(layout, acts, grid_size=4, min_count=0)
    assert sum(c.count for c in cells) == N_GOOD
    with pytest.raises(ValueError, match="unknown layout method"):
        atlas.embed(acts, method="mds")


def test_class_filter_and_comparison_layout(store):
    attr = store.attributions().astype(np.float32)
    c = int(np.bincount(attr.argmax(axis=1)).argmax())  # a class that wins somewhere
    rows = atlas.class_filter(store, c, top_n=5)
    winners = set(np.nonzero(attr.argmax(axis=1) == c)[0])
    top = {i for i in np.argsort(-attr[:, c], kind="stable")[:5] if attr[i, c] > 0}
    assert set(rows.tolist()) == winners | top and list(rows) == sorted(rows)
    assert np.array_equal(atlas.class_filter(attr, c, top_n=5), rows)
    name = store.labels[c]
    assert np.array_equal(atlas.class_filter(store, name, top_n=5), rows)

    a, b = (int(k) for k in np.argsort(-np.maximum(attr, 0).sum(axis=0))[:2])
    comp = atlas.comparison_layout(store, a, b, top_n=15, seed=0)
    assert comp.coords.shape == (len(comp.rows), 2) and comp.classes == (a, b)
    x, y = comp.coords[:, 0], comp.coords[:, 1]
    assert x.min() >= -1 and x.max() <= 1 and y.min() == 0 and y.max() == 1
    expected_x = np.clip((attr[comp.rows, b] - attr[comp.rows, a]) / comp.scale, -1, 1)
    np.testing.assert_allclose(x, expected_x, atol=1e-5)
    same = atlas.comparison_layout((store.activations(), attr), a, b, top_n=15, seed=0)
    assert np.array_equal(same.rows, comp.rows)
    cells = atlas.bin_layout(comp.coords, store.activations(rows=comp.rows), grid_size=10, min_count=0,
                             extent=comp.extent)
    assert sum(cell.count for cell in cells) == len(comp.rows)
    assert all(-1 <= cell.center[0] <= 1 and 0 <= cell.center[1] <= 1 for cell in cells)


@pytest.mark.slow
@pytest.mark.umap
def test_umap_layout():
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 4
    acts = np.concatenate([c + rng.standard_normal((100, 16)) for c in centres]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layout = atlas.atlas_layout(acts, method="umap", seed=0)
    assert layout.method == "umap" and layout.coords.shape == (300, 2)
    assert layout.coords.min() == 0 and layout.coords.max() == 1
    # the three clusters stay apart: each point's nearest neighbour is in its own cluster
    d = np.linalg.norm(layout.coords[:, None] - layout.coords[None], axis=-1) + np.eye(300) * 9
    assert (d.argmin(axis=1) // 100 == np.arange(300) // 100).mean() > 0.95
