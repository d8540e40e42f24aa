"""Nothing lost, nothing silent on the newer surfaces: long texts, uploads, the user's model file, models of other
channel counts, dtypes and output structures, the Python API's image forms, negative units, the device (see
docs/reliability.md, "The cases of issue 32")."""

from __future__ import annotations

import collections
import io
import random
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import luminate
from luminate.cli import main
from luminate.cli.checks import UsageError
from luminate.cli.common import load_model_arg
from luminate.images import to_tensor
from luminate.models.contract import network_output


def _net(channels: int = 3) -> nn.Sequential:
    return nn.Sequential(collections.OrderedDict(
        conv1=nn.Conv2d(channels, 8, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(8, 8, 3, padding=1),
        relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 10)))


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _net()

    def forward(self, x):
        return self.body(x), x.mean()


class _Dict(nn.Module):
    def __init__(self, key: str):
        super().__init__()
        self.body, self.key = _net(), key

    def forward(self, x):
        return {self.key: self.body(x), "aux": x.mean()}


@pytest.fixture(scope="module")
def char_rnn():
    return luminate.models.load("char_rnn")


def _text(n: int, seed: int = 0) -> str:
    r = random.Random(seed)
    return "".join(r.choice("abc def (ghi) jkl\"'mno, ") for _ in range(n))


# ----- long texts in bounded memory -------------------------------------------------------------------------------


def test_a_long_text_is_read_in_chunks_that_match_one_pass(char_rnn, monkeypatch):
    from luminate.text import core

    text = _text(700)
    whole = core.activations(char_rnn, [text, text[:30]], ["rnn_1", "output"])
    seen = []
    handle = char_rnn.network.embedding.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    monkeypatch.setattr(core, "CHUNK_TOKENS", 128)
    try:
        chunked = core.activations(char_rnn, [text, text[:30]], ["rnn_1", "output"])
    finally:
        handle.remove()
    assert max(seen) <= 128 and len(seen) > 5  # the long text never reached the network whole
    for layer in ("rnn_1", "output"):
        assert [t.shape for t in chunked[layer]] == [t.shape for t in whole[layer]]
        assert torch.allclose(chunked[layer][0], whole[layer][0], atol=1e-3)


def test_token_attribution_on_a_long_text_covers_a_window_ending_at_the_peak(char_rnn):
    from luminate.text import core
    from luminate.text.attribution import WINDOW_TOKENS, attribute_tokens

    text = _text(1500)
    att = attribute_tokens(char_rnn, text, "rnn_1", 14, n_steps=8)
    acts = core.activations(char_rnn, [text], "rnn_1")[0][:, 14]
    peak = int(acts.argmax())
    assert att.window == (peak + 1 - WINDOW_TOKENS, peak + 1) and att.n_tokens == 1500
    assert len(att.tokens) == len(att.scores) == WINDOW_TOKENS
    assert att.value == pytest.approx(float(acts[peak]), abs=1e-4)  # the text before the window is held, not lost
    assert "attributed over tokens" in att.what and "held fixed" in att.what
    assert att.text == text[att.window[0]:att.window[1]]


def test_a_short_text_is_attributed_whole_as_before(char_rnn):
    from luminate.text.attribution import attribute_tokens

    att = attribute_tokens(char_rnn, "see (this) here", "rnn_1", 14, n_steps=8)
    assert att.window == (0, 15) and len(att.tokens) == 15 and "attributed over" not in att.what


def test_attribute_takes_a_text_longer_than_a_file_name(tmp_path, capsys):
    text = "see (this) here " * 20  # 320 bytes: a path that long cannot exist
    rc = main(["attribute", "char_rnn", text, "--layer", "rnn_1", "--unit", "14", "--steps", "4",
               "-o", str(tmp_path / "a.html")])
    assert rc == 0, capsys.readouterr().err
    assert "attributed over tokens" in (tmp_path / "a.html").read_text(encoding="utf-8")


# ----- uploads --------------------------------------------------------------------------------------------------


def test_a_large_upload_is_decoded_reduced_and_decodes_are_bounded():
    from luminate.serve.uploads import DecodeSlots, UploadError, decode_upload

    buf = io.BytesIO()
    Image.new("RGB", (5000, 4000), (120, 130, 140)).save(buf, "PNG")
    im = decode_upload(buf.getvalue(), min_side=1024)
    assert im.mode == "RGB" and 1024 <= min(im.size) < 2048 and im.size[0] > im.size[1]
    slots = DecodeSlots(1, wait_s=0.05)
    with slots:  # the one slot is taken: the next upload is refused as busy, not queued without bound
        with pytest.raises(UploadError) as info:
            decode_upload(buf.getvalue(), slots=slots)
    assert info.value.status == 503 and info.value.retry_after
    assert decode_upload(buf.getvalue(), slots=slots, min_side=None).size == (5000, 4000)


# ----- your model file ------------------------------------------------------------------------------------------


def test_errors_in_the_users_file_are_reported_as_theirs(tmp_path, capsys, monkeypatch):
    (tmp_path / "syntax.py").write_text("def build(:\n    pass\n")
    (tmp_path / "raises.py").write_text("def build():\n    raise RuntimeError('my own failure')\n")
    monkeypatch.chdir(tmp_path)
    for spec, words in (("syntax.py:build", ("syntax.py", "line 1", "SyntaxError")),
                        ("raises.py:build", ("raises.py", "line 2", "my own failure")),
                        ("os.path:join", ("needs arguments",))):
        with pytest.raises(UsageError) as info:
            load_model_arg(spec)
        assert all(w in str(info.value) for w in words), str(info.value)
        assert main(["layers", spec]) == 2
        err = capsys.readouterr().err
        assert "bug in Luminate" not in err and words[-1] in err


def test_a_network_with_other_channels_dtype_or_outputs_works(tmp_path):
    torch.manual_seed(0)
    gray = luminate.models.wrap(_net(1), 32, channels=1, value_range=(0, 1))
    result = luminate.render(gray, "conv2:3", size=32, steps=4, seed=0, progress=False)
    assert result.image.shape[1] == 1
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "red.png")
    assert gray.preprocess(str(tmp_path / "red.png")).shape == (1, 1, 32, 32)  # a photo becomes grey
    with pytest.raises(ValueError, match="channels=1"):
        luminate.models.wrap(_net(1), 32, value_range=(0, 1))  # refused at wrap, with the fix

    f64 = luminate.models.wrap(_net().double(), 32, value_range=(0, 1))
    assert f64(torch.rand(2, 3, 32, 32)).dtype == torch.float64
    assert luminate.render(f64, "conv2:1", size=32, steps=4, seed=0, progress=False).image.dtype == torch.float32

    pair = luminate.models.wrap(_Pair(), 32, value_range=(0, 1))
    assert pair(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    luminate.render(pair, "class:3", size=32, steps=4, seed=0, progress=False)
    assert luminate.models.wrap(_Dict("logits"), 32, value_range=(0, 1))(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    scores = luminate.models.wrap(_Dict("scores"), 32, value_range=(0, 1))
    with pytest.raises(TypeError, match="output_key"):
        scores(torch.rand(1, 3, 32, 32))
    scores.output_key = "scores"
    assert scores(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_network_output_takes_the_first_tensor_or_a_declared_key():
    t = torch.zeros(2, 3)
    assert network_output(t) is t and network_output((t, 1.0)) is t and network_output([None, t]) is t
    assert network_output({"out": t}) is t and network_output({"x": t}, key="x") is t
    with pytest.raises(TypeError, match="wrap it"):
        network_output("no tensor")


# ----- the Python API -------------------------------------------------------------------------------------------


def test_the_api_takes_the_image_forms_at_hand(tmp_path):
    torch.manual_seed(0)
    model = luminate.models.wrap(_net(), 32, value_range=(0, 1))
    for i, size in enumerate(((40, 30), (64, 64))):
        Image.new("RGB", size, (30 * i, 90, 150)).save(tmp_path / f"{i}.png")
    paths = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    array = np.asarray(Image.open(paths[0]))
    forms = [paths, array, Image.open(paths[1]), [torch.rand(3, 24, 24), torch.rand(3, 40, 36)],
             [paths[0], array, torch.rand(3, 32, 32)]]
    for form, n in zip(forms, (2, 1, 1, 2, 3)):
        assert luminate.activations(model, form, "conv2").shape == (n, 8, 32, 32)
    with pytest.raises(TypeError, match="accepts"):
        luminate.activations(model, {"not": "an image"}, "conv2")
    with torch.no_grad():
        assert luminate.render(model, "conv2:1", size=32, steps=3, seed=0, progress=False).image.shape[1] == 3


def test_grey_and_multichannel_conversions_are_explicit():
    rgb = torch.rand(1, 3, 8, 8)
    grey = to_tensor(rgb, channels=1)
    assert grey.shape == (1, 1, 8, 8)
    assert torch.allclose(grey[0, 0], 0.299 * rgb[0, 0] + 0.587 * rgb[0, 1] + 0.114 * rgb[0, 2])
    with pytest.raises(ValueError, match="4-channel"):
        to_tensor(rgb, channels=4)


def test_one_rule_for_negative_units():
    torch.manual_seed(0)
    model = luminate.models.wrap(_net(), 32, value_range=(0, 1))
    with pytest.raises(IndexError, match="negative"):
        model.check_channel("conv2", -1)
    with pytest.raises(IndexError, match="negative"):
        luminate.render(model, luminate.objectives.channel("conv2", -1), size=32, steps=2, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_refused_before_loading(capsys):
    with pytest.raises(UsageError, match="CUDA is not available"):
        load_model_arg("char_rnn", "cuda")
    assert main(["attribute", "char_rnn", "hi (x)", "--layer", "rnn_1", "--unit", "3", "--device", "cuda"]) == 2
    assert "bug in Luminate" not in capsys.readouterr().err


def test_decodes_wait_for_a_free_slot_within_their_patience():
    from luminate.serve.uploads import DecodeSlots

    slots, order = DecodeSlots(1, wait_s=5), []
    with slots:
        t = threading.Thread(target=lambda: (slots.__enter__(), order.append("second"), slots.__exit__()))
        t.start()
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]


# ----- a dying image-decoding worker ---------------------------------------------------------------------------

_DYING_WORKER = """
import contextlib, resource, sys, torch
from torch import nn
import luminate
from luminate.data.inputs import image_set
from luminate.data.passes import LoaderError, stream
from luminate.data.settings import PassSettings
resource.setrlimit(resource.RLIMIT_FSIZE, (150 << 10, resource.RLIM_INFINITY))  # shared-memory files past 150 KB fail
model = luminate.models.wrap(nn.Conv2d(3, 4, 3), 128, value_range=(0, 1))
class Work:
    @contextlib.contextmanager
    def open(self, model):
        yield lambda batch: len(batch.indices)
try:
    stream(model, image_set(sys.argv[1]), [0], 8, Work(), lambda *a: None,
           PassSettings(batch_size=8, num_workers=1, progress=False))
except LoaderError as exc:
    print("LoaderError:", exc)
    sys.exit(3)
"""


def test_a_worker_that_cannot_hand_over_its_batch_stops_the_run(tmp_path):
    import signal
    import subprocess
    import sys

    for i in range(8):
        Image.new("RGB", (64, 64), (i * 20, 50, 90)).save(tmp_path / f"{i}.png")
    proc = subprocess.run([sys.executable, "-c", _DYING_WORKER, str(tmp_path)], capture_output=True, text=True,
                          timeout=240, preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "ulimit -f" in proc.stdout and "File too large" in proc.stdout


def test_utf16_and_bom_text_files_read_as_text(tmp_path):
    from luminate.data.inputs import read_texts

    lines = "first line (é)\nsecond line\n"
    for name, data in (("bom8.txt", b"\xef\xbb\xbf" + lines.encode()), ("u16.txt", lines.encode("utf-16")),
                       ("u16le.txt", lines.encode("utf-16-le")), ("u16be.txt", lines.encode("utf-16-be"))):
        (tmp_path / name).write_bytes(data)
        texts = read_texts(tmp_path / name)
        assert list(texts) == ["first line (é)", "second line"], name


# ----- the app --------------------------------------------------------------------------------------------------


def _get(base: str, path: str, headers: dict | None = None):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(base.rstrip("/") + path, headers=headers or {}),
                                    timeout=60) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


@pytest.fixture(scope="module")
def gray_server():
    serve = pytest.importorskip("luminate.serve")
    torch.manual_seed(0)
    model = luminate.models.wrap(_net(1), 32, channels=1, value_range=(0, 1))
    with serve.running(model, render_steps=2, render_size=32) as base:
        yield base


def test_the_app_refuses_other_sites_and_negative_units_and_serves_grey_models(gray_server):
    import json

    status, body, _ = _get(gray_server, "/api/units/conv2/5.png", {"Sec-Fetch-Site": "cross-site",
                                                                    "Sec-Fetch-Dest": "image"})
    assert status == 403 and b"another site" in body
    assert _get(gray_server, "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})[0] == 200
    assert _get(gray_server, "/api/info", {"Sec-Fetch-Site": "same-origin"})[0] == 200
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(buf, "PNG")
    from tests.test_serve import upload

    status, body, _ = upload(gray_server, buf.getvalue())
    assert status == 200, body
    key = json.loads(body)["id"]
    status, body, _ = _get(gray_server, f"/api/activations?image={key}&layer=conv2&unit=-1")
    assert 400 <= status < 500 and b"negative" in body
    assert _get(gray_server, f"/api/activations?image={key}&layer=conv2&unit=1")[0] == 200
    assert _get(gray_server, f"/api/classes?image={key}&k=3")[0] == 200
    import time

    for _ in range(300):   # a unit of a one-channel model renders with one channel
        status, body, _ = _get(gray_server, "/api/units/conv2/1.png")
        if status != 202:
            break
        time.sleep(0.1)
    assert status == 200, body


def test_the_host_check_stays_on_any_address():
    serve = pytest.importorskip("luminate.serve")
    names = serve.served_names("0.0.0.0")
    assert "127.0.0.1" in names and "localhost" in names and "evil.example" not in names
    assert "127.0.0.2" in serve.served_names("127.0.0.2")
    assert "my.box" in serve.served_names("10.0.0.5", ["my.box"])
    with pytest.raises(OSError, match="--host must be an address of this machine"):
        serve.bind("192.0.2.77", 0)  # TEST-NET-1: never an address of this machine


# ----- features: damaged dictionaries, one run per site, settings checked first ---------------------------------


def test_a_damaged_or_truncated_dictionary_is_never_read(tmp_path):
    import struct

    from luminate.features.dictionary import Dictionary, DictionaryDamagedError, read_dictionary

    torch.manual_seed(0)
    d = Dictionary({"components": torch.rand(8, 5)}, "nmf", 0, "conv2", "net", "w0")
    path = d.save(tmp_path / "dictionary.safetensors")
    assert torch.equal(read_dictionary(path).tensors["components"], d.tensors["components"])
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start + 10:start + 14] = b"\x7f" * 4   # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(DictionaryDamagedError, match="SHA-256"):
        read_dictionary(path)
    path.write_bytes(bytes(data[:start + 20]))   # truncated
    with pytest.raises(DictionaryDamagedError, match="damaged"):
        read_dictionary(path)


def test_features_refuses_bad_counts_before_any_work(tmp_path, capsys):
    for flag, value in (("--k", "0"), ("--features", "0"), ("--k", "99")):
        out = tmp_path / f"site{flag}{value}"
        rc = main(["features", "efficientnet_lite0", str(tmp_path), "--layer", "blocks.10", "--features", "16",
                   flag, value, "-o", str(out)])
        assert rc == 2 and not out.exists()
        assert flag in capsys.readouterr().err


def test_a_rebuilt_site_removes_the_pages_it_no_longer_has(tmp_path):
    from luminate.views.site import PageRecord

    record = tmp_path / "data" / "pages.json"
    record.parent.mkdir()
    first = PageRecord(tmp_path, record, "settings A")
    for name in ("a/feature-00001.html", "a/feature-00002.html", "index.html"):
        first.put(name, b"x")
    first.finish()
    second = PageRecord(tmp_path, record, "settings B")
    second.put("a/feature-00001.html", b"y")
    second.put("index.html", b"y")
    second.finish()
    assert (tmp_path / "a/feature-00001.html").is_file() and not (tmp_path / "a/feature-00002.html").exists()


def test_the_render_queue_is_bounded_and_close_stops_a_render():
    import time

    from luminate.serve.worker import QueueFull, RenderWorker

    torch.manual_seed(0)
    model = luminate.models.wrap(_net(), 32, value_range=(0, 1))
    worker = RenderWorker(model, size=32, steps=100000, batch=1, max_queued=2)
    try:
        first = worker.request("conv2", 0)
        for _ in range(400):
            if first.status != "queued":
                break
            time.sleep(0.05)
        assert first.status == "rendering"
        queued = [worker.request("conv2", u) for u in (1, 2)]
        with pytest.raises(QueueFull) as info:
            worker.request("conv2", 3)
        assert info.value.retry_after >= 1
        assert worker.request("conv2", 1) is queued[0]   # a unit already queued is not queued twice
    finally:
        worker.close(timeout=30)
    assert not worker._thread.is_alive()   # the long render stopped at its next step


def test_a_file_size_limit_is_named_as_such():
    import errno

    from luminate.cache import storage_error

    found = storage_error(OSError(errno.EFBIG, "File too large", "/x/shard.npy"), "/x")
    assert found is not None and "ulimit -f" in str(found) and "no space" not in str(found)


def test_a_unit_slice_that_selects_nothing_is_refused():
    from luminate.data.settings import parse_units

    assert parse_units("2:5", 8) == [2, 3, 4] and parse_units("0:100", 4) == [0, 1, 2, 3]
    for spec in ("20:30", "5:2"):
        with pytest.raises(IndexError, match="selects nothing"):
            parse_units(spec, 16)
