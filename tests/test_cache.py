"""The one render cache: keys, round trips, merging, damaged entries, the cache folder setting."""

import json

import pytest
import torch
from torch import nn

from luminate import models
from luminate.cache import RenderCache, atomic_write, cache_dir, dequantize, quantize


def _images(n, c=3, size=8, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_put_get_round_trip_is_the_8_bit_image(tmp_path):
    cache = RenderCache(tmp_path)
    images = _images(5)
    key = RenderCache.key({"layer": "l", "size": 8})
    assert cache.get(key) is None and key not in cache
    path = cache.put(key, images, scores={2: 1.5}, settings={"layer": "l"})
    assert path == tmp_path / key[:2] / f"{key}.png" and key in cache and len(cache) == 1
    hit = cache.get(key)
    assert sorted(hit.images) == [0, 1, 2, 3, 4]
    for slot, image in enumerate(images):
        assert torch.equal(hit.images[slot], dequantize(quantize(image)))
        assert (hit.images[slot] - image).abs().max() <= 0.5 / 255 + 1e-6
    assert hit.scores == {2: 1.5} and hit.settings == {"layer": "l"}
    assert sorted(cache.get(key, [4, 1, 9]).images) == [1, 4]          # asked-for slots that exist
    index = json.loads(path.with_suffix(".json").read_text())           # the index beside the PNG
    assert index["present"] == [0, 1, 2, 3, 4] and index["settings"] == {"layer": "l"}


def test_put_merges_with_the_entry_on_disk(tmp_path):
    cache = RenderCache(tmp_path)
    key = RenderCache.key({"kind": "sheet"})
    a, b = _images(3, seed=1), _images(2, seed=2)
    cache.put(key, {0: a[0], 7: a[1]}, cols=4)
    RenderCache(tmp_path).put(key, {3: b[0], 7: b[1]}, scores={3: -2.0})   # another writer, same folder
    hit = cache.get(key)
    assert sorted(hit.images) == [0, 3, 7]
    assert torch.equal(hit.images[0], dequantize(quantize(a[0])))
    assert torch.equal(hit.images[7], dequantize(quantize(b[1])))       # the newer image wins
    assert hit.scores == {3: -2.0}
    assert json.loads(cache.path(key).with_suffix(".json").read_text())["cols"] == 4   # fixed by the first write


def test_rgba_and_grey_entries(tmp_path):
    cache = RenderCache(tmp_path)
    for c in (1, 4):
        key = RenderCache.key({"channels": c})
        images = _images(2, c=c)
        cache.put(key, images)
        assert torch.equal(torch.stack(list(cache.get(key).images.values())), dequantize(quantize(images)))


def test_bad_images_and_keys_are_named(tmp_path):
    cache = RenderCache(tmp_path)
    key = RenderCache.key({})
    with pytest.raises(ValueError, match="one shape"):
        cache.put(key, {0: torch.rand(3, 8, 8), 1: torch.rand(3, 9, 9)})
    with pytest.raises(ValueError, match="N, C, H, W"):
        cache.put(key, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="hex digest"):
        cache.path("../escape")


def test_damaged_entry_is_a_miss_and_is_rewritten(tmp_path):
    cache = RenderCache(tmp_path)
    key = RenderCache.key({"x": 1})
    path = cache.put(key, _images(2))
    path.write_bytes(b"\x89PNG not really")
    assert cache.get(key) is None and cache.get_many([key]) == {}
    cache.put(key, _images(1, seed=3))
    assert sorted(cache.get(key).images) == [0]


def test_get_many_returns_the_hits(tmp_path):
    cache = RenderCache(tmp_path)
    keys = [RenderCache.key({"icon": i}) for i in range(3)]
    for k in keys[:2]:
        cache.put(k, _images(1))
    found = cache.get_many(keys)
    assert sorted(found) == sorted(keys[:2])


def test_keys_follow_settings_data_and_weights():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    model = models.wrap(net, 16, value_range=(0, 1), name="tiny")
    base = RenderCache.key({"size": 8}, model=model)
    assert base == RenderCache.key({"size": 8}, model=model)
    assert base != RenderCache.key({"size": 9}, model=model)
    assert base != RenderCache.key({"size": 8}, torch.ones(4), model=model)
    # a tensor's key is its float32 bytes, whatever its dtype
    assert RenderCache.key({}, torch.ones(4, dtype=torch.float64)) == RenderCache.key({}, torch.ones(4).numpy())
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1.0
    assert RenderCache.key({"size": 8}, model=model) != base          # new weights, new key


def test_one_environment_variable_moves_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LUMINATE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert RenderCache().folder == tmp_path / "c" / "renders"
    from luminate.models import inception
    assert inception.weights_path() == tmp_path / "c" / "inception_v1.pth"
    monkeypatch.delenv("LUMINATE_CACHE")
    assert cache_dir("renders").parts[-3:] == (".cache", "luminate", "renders")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]
