"""Nothing lost, nothing silent: odd images, damaged state, full disks, read-only folders, interrupted and
concurrent runs, and bad arguments each get a right answer or a clear error (see docs/reliability.md)."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from luminate.data.store import ActivationStore, StoreDamagedError, StoreWriter
from luminate.cache import RenderCache, StorageError, storage_error
from luminate.cli import build_parser, main
from luminate.cli.checks import UsageError, check_ray, check_units, dash_hint
from luminate.images import ImageTooLargeError, open_image, to_tensor

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# ----- images ----------------------------------------------------------------------------------------------------


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(flower_path, tmp_path):
    grey = np.asarray(Image.open(flower_path).convert("L"))
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    eight = to_tensor(tmp_path / "g8.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    assert (to_tensor(tmp_path / "g16.png") - eight).abs().max() < 1e-6   # not a white square
    # in memory: I;16, I (32-bit) and F images keep their full precision
    as_i16 = Image.fromarray(grey.astype(np.uint16) * 257)
    as_i = Image.fromarray(grey.astype(np.int32) * 257)
    as_f = Image.fromarray(grey.astype(np.float32) / 255)
    for im in (as_i16, as_i, as_f):
        assert (to_tensor(im) - eight).abs().max() < 1e-5, im.mode
    assert np.asarray(open_image(tmp_path / "g16.png")).std() > 10   # the 8-bit RGB view is a picture too


def test_exif_orientation_is_applied(flower_path, tmp_path):
    photo = Image.open(flower_path)
    exif = Image.Exif()
    exif[0x0112] = 6   # "rotate 90 clockwise to view": the camera stored it on its side
    photo.rotate(90, expand=True).save(tmp_path / "side.jpg", exif=exif, quality=95)
    upright = to_tensor(flower_path)
    read = to_tensor(tmp_path / "side.jpg")
    assert read.shape == upright.shape
    assert (read - upright).abs().mean() < 0.03   # the same picture (up to JPEG re-encoding)


def test_huge_jpeg_decodes_at_reduced_size_and_budget_is_a_named_skip(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (5000, 4200), (120, 130, 90)).save(big, quality=60)
    small = open_image(big, min_side=300)
    assert 300 <= min(small.size) < 1200 and small.size[0] > small.size[1]   # draft, aspect kept
    assert open_image(big).size == (5000, 4200)   # without a hint: every pixel
    with pytest.raises(ImageTooLargeError, match=r"big\.jpg is 5000x4200 pixels.*budget"):
        open_image(big, max_pixels=1_000_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = 5_000_000   # this file is now a "decompression bomb" to Pillow
        try:
            with pytest.raises(ImageTooLargeError, match="big.jpg"):
                open_image(big)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# ----- damaged state ---------------------------------------------------------------------------------------------


def _store(path: Path, n_shards: int = 3, rows: int = 6) -> dict:
    header = {"model": "synthetic", "input": "-", "n_classes": 2, "labels": None,
              "layers": [{"name": "l", "key": "l", "channels": 4, "grid": [1, 1]}],
              "images": {"count": n_shards * rows, "kind": "dataset", "source": "synthetic", "root": None},
              "settings": {"attribution": False, "positions_per_image": 1}, "n_shards": n_shards,
              "shard_images": rows}
    writer = StoreWriter(path, header, [f"dataset[{i}]" for i in range(n_shards * rows)])
    for k in range(n_shards):
        writer.write_shard(k, _arrays(k, rows), (k * rows, (k + 1) * rows))
    return header


def _arrays(k: int, rows: int) -> dict:
    return {"acts.l": np.random.default_rng(k).standard_normal((rows, 4)).astype(np.float32),
            "image": np.arange(k * rows, (k + 1) * rows)}


def test_truncated_or_altered_shards_are_named_dropped_and_recollected(tmp_path, caplog):
    path = tmp_path / "s"
    header = _store(path)
    clean = ActivationStore(path).activations().copy()
    short = path / "shards" / "00000" / "acts.l.npy"
    short.write_bytes(short.read_bytes()[:100])
    with pytest.raises(StoreDamagedError, match="00000/acts.l.npy has 100 bytes"):
        ActivationStore(path)   # a reader names it (no mmap error later)
    altered = path / "shards" / "00002" / "acts.l.npy"
    a = np.load(altered)
    a[0, 0] += 1000
    np.save(altered, a)   # same size, other bytes
    with caplog.at_level(logging.WARNING):
        writer = StoreWriter(path, header, [f"dataset[{i}]" for i in range(18)])
    assert "damaged" in caplog.text and "00000/acts.l.npy" in caplog.text and "00002/acts.l.npy" in caplog.text
    assert writer.done() == {1}
    for k in (0, 2):
        writer.write_shard(k, _arrays(k, 6), (k * 6, (k + 1) * 6))
    assert np.array_equal(ActivationStore(path).activations(), clean)


def test_garbled_manifest_is_named_for_readers_and_restarted_by_writers(tmp_path, caplog):
    path = tmp_path / "s"
    header = _store(path)
    (path / "manifest.json").write_text("{")
    with pytest.raises(StoreDamagedError, match=r"manifest .*manifest\.json is damaged.*rerun"):
        ActivationStore(path)
    with caplog.at_level(logging.WARNING):
        writer = StoreWriter(path, header, [f"dataset[{i}]" for i in range(18)])
    assert "damaged" in caplog.text and writer.done() == set()
    assert json.loads((path / "manifest.json").read_text())["shards"] == []


def test_damaged_render_cache_entry_counts_as_missing(tmp_path, caplog):
    cache = RenderCache(tmp_path)
    key = RenderCache.key({"unit": 1})
    png = cache.put(key, torch.full((6, 3, 8, 8), 0.5))
    png.write_bytes(os.urandom(500))
    with caplog.at_level(logging.WARNING):
        assert cache.get(key) is None
    assert "damaged render-cache entry" in caplog.text and png.name in caplog.text


# ----- faults: full disk, read-only folder -----------------------------------------------------------------------


def test_a_failed_shard_write_leaves_no_temporary_files_and_names_the_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "s"
    header = _store(path, n_shards=2)
    (path / "shards" / "00001").rename(tmp_path / "moved")   # make shard 1 unlisted work again
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]
    (path / "manifest.json").write_text(json.dumps(manifest))
    writer = StoreWriter(path, header, [f"dataset[{i}]" for i in range(12)])

    def full(fh, array, allow_pickle=False):
        raise OSError("64000 requested and 34752 written")   # what numpy says on a full disk (no errno)
    monkeypatch.setattr(np, "save", full)
    with pytest.raises(StorageError, match="no space left on device") as caught:
        writer.write_shard(1, _arrays(1, 6), (6, 12))
    assert caught.value.errno == errno.ENOSPC and str(path) in str(caught.value)
    assert not [p for p in (path / "shards").iterdir() if p.name.startswith(".tmp")]
    assert storage_error(OSError(errno.EROFS, "Read-only file system"), path).errno == errno.EROFS


@pytest.fixture
def tmpfs(tmp_path):
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("could not mount a tmpfs here (no mount permission in this container)")
    yield where
    subprocess.run(["umount", str(where)], check=False)


def test_full_disk_is_a_storage_error_without_temporary_files(tmpfs):
    header = {"model": "synthetic", "input": "-", "n_classes": 2, "labels": None,
              "layers": [{"name": "l", "key": "l", "channels": 4, "grid": [1, 1]}],
              "images": {"count": 2, "kind": "dataset", "source": "synthetic", "root": None},
              "settings": {"attribution": False}, "n_shards": 1, "shard_images": 2}
    writer = StoreWriter(tmpfs / "store", header, ["a", "b"])
    with pytest.raises(StorageError, match="no space left on device"):
        writer.write_shard(0, {"acts.l": np.zeros((2, 300_000), np.float32), "image": np.arange(2)}, (0, 2))
    assert not list(tmpfs.rglob(".tmp*")) and writer.done() == set()


def test_finished_store_and_site_on_a_read_only_mount_read_fine(tmp_path):
    if not ROOT:
        pytest.skip("a read-only bind mount needs root")
    path = tmp_path / "s"
    header = _store(path)
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(path), str(ro)], capture_output=True).returncode:
        pytest.skip("could not bind-mount here (no mount permission in this container)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        writer = StoreWriter(ro, header, [f"dataset[{i}]" for i in range(18)])   # no lock needed: nothing to write
        assert writer.done() == {0, 1, 2} and len(ActivationStore(ro)) == 18
        from luminate.data.store import site_lock

        with site_lock(ro):
            pass
        with pytest.raises(StorageError, match="read-only"):
            from luminate.cache import atomic_write

            atomic_write(ro / "new.txt", b"x")
    finally:
        subprocess.run(["umount", str(ro)], check=False)


# ----- one run per site --------------------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_site_is_refused_naming_the_process(tmp_path):
    from luminate.data.store import SiteInUseError, site_lock

    site = tmp_path / "site"
    site.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fh = open({str(site / '.lock')!r}, "a+"); fcntl.flock(fh, fcntl.LOCK_EX)
        print("held", flush=True); time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SiteInUseError, match=f"in use by process {holder.pid}"):
            with site_lock(site):
                pass
    finally:
        holder.kill()
        holder.wait()
    with site_lock(site), site_lock(site):   # free again; re-entrant within one process
        assert fcntl is not None


# ----- arguments ---------------------------------------------------------------------------------------------------


def test_unit_specs_are_checked_against_the_layer():
    assert check_units("0:16", 112, "blocks.10") == ("0:16", "")
    spec, warning = check_units("0:100000", 112, "blocks.10")
    assert spec == "0:112" and "only 112 units" in warning
    for bad, match in (("5:2", "selects no unit"), ("200:300", "only 112 units"), ("3,500", "out of range"),
                       ("a:b", "give a slice")):
        with pytest.raises(UsageError, match=match):
            check_units(bad, 112, "blocks.10")


@pytest.mark.parametrize("flags, match", [(["--steps", "0"], "--steps 0: must be at least 1"),
                                          (["--size", "100000"], "--size 100000: must be between"),
                                          (["--size", "4"], "--size 4: must be between"),
                                          (["--top", "0"], "--top 0"),
                                          (["--device", "cuda:7"], "--device cuda:7")])
def test_microscope_refuses_bad_options_before_any_work(flags, match, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["microscope", "efficientnet_lite0", str(tmp_path), "-o", str(out), "--quiet", *flags]) == 2
    assert match in capsys.readouterr().err and not out.exists()


def test_an_unreachable_ray_address_is_refused_quickly():
    pytest.importorskip("ray")
    with socket.socket() as s:   # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(UsageError, match=f"nothing answers at 127.0.0.1:{port}"):
        check_ray(f"127.0.0.1:{port}", timeout=2)
    assert time.perf_counter() - start < 5
    with pytest.raises(UsageError, match="HOST:PORT"):
        check_ray("somewhere")
    check_ray("local")


def test_file_names_starting_with_a_dash_get_a_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "-photo.jpg")
    with pytest.raises(SystemExit) as caught:
        main(["classify", "efficientnet_lite0", "-photo.jpg"])
    assert caught.value.code == 2
    assert "put -- before file names" in capsys.readouterr().err
    assert dash_hint(["--top", "3"], build_parser()) == ""


# ----- Ctrl-C to the whole process group ---------------------------------------------------------------------------


CHILD = """
import sys, time
from pathlib import Path
import luminate.atlas  # noqa: F401
from luminate.cli import main

c = sys.modules["luminate.atlas.collect"]

original = c._batch_rows
def slow(*args, **kwargs):
    Path(sys.argv[2]).write_text("collecting")
    time.sleep(0.5)
    return original(*args, **kwargs)
c._batch_rows = slow
sys.exit(main(["collect", "efficientnet_lite0", sys.argv[1], "--layer", "blocks.4", "-o", sys.argv[3], "--quiet",
               "--workers", "2", "--batch-size", "2", "--shard-size", "4"]))
"""


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_during_collect_exits_130_without_traceback(tmp_path, flower_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for k in range(40):
        Image.open(flower_path).resize((64, 64)).save(images / f"p{k:02d}.jpg")
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(images), str(marker), str(tmp_path / "store")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            assert time.time() < deadline, "the collection never started"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)   # what a terminal's Ctrl-C does: the main process and its workers
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output[-2000:]
    assert "Traceback" not in output and "interrupted" in output
    assert not list((tmp_path / "store").rglob(".tmp*"))
