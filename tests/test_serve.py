"""The live toolbox (``luminate serve``): a real uvicorn server on a free loopback port, its API's answers and
refusals, background renders, and the page in Chromium with a fake camera. A tiny network keeps it quick."""

import http.client
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import luminate  # noqa: E402
from luminate import serve  # noqa: E402
from luminate.analysis import attribution  # noqa: E402
from luminate.serve import worker as worker_module  # noqa: E402

LABELS = ["cat", "dog", "daisy", "bee", "car"]


def tiny_model():
    """A seeded 2-conv network on 32 px images, with labels."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 12, 3, padding=1), relu1=nn.ReLU(),
                                    conv2=nn.Conv2d(12, 16, 3, stride=2, padding=1), relu2=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(16, len(LABELS))))
    return luminate.models.wrap(net, 32, value_range=(0, 1), labels=LABELS, name="tiny")


TINY_FILE = '''
import sys
sys.path.insert(0, {tests!r})
from test_serve import tiny_model

def build():
    return tiny_model()
'''


def request(base, path, data=None, headers=None, method=None):
    """``(status, body bytes, headers)`` of one request; HTTP errors are answers too."""
    r = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def multipart(data: bytes, name: str = "photo.png") -> tuple[bytes, dict]:
    b = "----luminate-test"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={b}"}


def upload(base, data: bytes, name: str = "photo.png"):
    body, headers = multipart(data, name)
    return request(base, "/api/images", body, headers)


def png_file(path, seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header declaring ``width x height`` pixels (10 gigapixels) over a few bytes of data."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def server(tiny):
    """The toolbox over the tiny model on a free loopback port (small limits, so refusals are cheap to test)."""
    with serve.running(tiny, render_steps=8, render_size=32, max_images=4, max_upload=64 << 10) as base:
        yield base


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    return png_file(tmp_path_factory.mktemp("serve") / "photo.png")


def test_activations_classes_and_attribution_are_the_librarys(server, tiny, photo):
    status, body, _ = upload(server, photo.read_bytes())
    assert status == 200, body
    key = json.loads(body)["id"]
    x = tiny.preprocess(str(photo))
    for layer in ("conv1", "relu2"):
        status, body, _ = request(server, f"/api/activations?image={key}&layer={layer}&unit=3")
        assert status == 200, body
        got = json.loads(body)
        ref = luminate.activations(tiny, x, layer)[0]
        assert got["shape"] == list(ref.shape)
        assert torch.equal(torch.tensor(got["peaks"], dtype=torch.float32), ref.flatten(1).max(1).values)
        torch.testing.assert_close(torch.tensor(got["map"], dtype=torch.float32), ref[3], atol=1e-5, rtol=0)
        status, png, headers = request(server, f"/api/activations.png?image={key}&layer={layer}")
        assert status == 200 and headers["Content-Type"] == "image/png"
        sprite = got["sprite"]
        assert Image.open(io.BytesIO(png)).size == (sprite["cols"] * ref.shape[2], sprite["rows"] * ref.shape[1])
    status, body, _ = request(server, f"/api/classes?image={key}&k=3")
    classes = json.loads(body)["classes"]
    probs = tiny(x).softmax(-1)[0]
    assert [c["index"] for c in classes] == probs.topk(3).indices.tolist()
    assert classes[0]["name"] == LABELS[classes[0]["index"]]
    assert classes[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    status, body, _ = request(server, f"/api/attribution?image={key}&target=daisy&layer=conv2")
    assert status == 200, body
    got = json.loads(body)
    assert got["target"] == LABELS.index("daisy")
    ref = attribution.spatial_attribution(tiny, x, "conv2", target=LABELS.index("daisy"))[0]
    torch.testing.assert_close(torch.tensor(got["map"], dtype=torch.float32), ref, atol=1e-5, rtol=1e-4)
    status, png, _ = request(server, f"/api/images/{key}.png")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (32, 32)


def test_bad_requests_are_refused_with_the_reason(server, photo):
    key = json.loads(upload(server, photo.read_bytes())[1])["id"]
    status, body, _ = upload(server, b"hello, not an image", "x.jpg")
    assert status == 400 and b"not an image" in body
    status, body, _ = upload(server, b"\xff" * (8 << 20))   # over the 64 KB limit, more than socket buffers hold
    assert status == 413 and b"limited to" in body
    body, headers = multipart(b"\xff" * (200 << 10))
    conn = http.client.HTTPConnection(server.split("/")[2], timeout=30)   # no Content-Length: capped as it arrives
    conn.request("POST", "/api/images", body=(body[i:i + 8192] for i in range(0, len(body), 8192)), headers=headers,
                 encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 413 and b"limited to" in answer.read()
    conn.close()
    started = time.perf_counter()
    status, body, _ = upload(server, bomb_png())
    assert status == 413 and b"refused before decoding" in body, body
    assert time.perf_counter() - started < 5       # 10 gigapixels were never decoded
    status, body, _ = request(server, f"/api/activations?image={key}&layer=conv3")
    assert status == 400 and b"conv2" in body                       # the close names
    status, body, _ = request(server, "/api/activations?image=nope&layer=conv1")
    assert status == 404 and b"unknown image id" in body
    status, body, _ = request(server, f"/api/attribution?image={key}&target=daisyy")
    assert status == 400 and b"daisy" in body
    assert request(server, "/api/units/conv1/99.png")[0] == 404   # conv1 has 12 units
    assert request(server, "/api/units/flat/0.png")[0] == 400      # [C]: no map to visualize
    for path in ("/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/assets/../../../../etc/passwd",
                 "/api/images/..%2f..%2fetc%2fpasswd", "/api/units/..%2f..%2fetc/passwd"):
        status, body, _ = request(server, path)
        assert status in (400, 404) and b"root:" not in body, path


def test_closed_to_other_origins_and_hosts(server):
    status, body, headers = request(server, "/healthz", headers={"Origin": "http://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in {k.lower() for k in headers}
    body, headers = multipart(b"x")
    assert request(server, "/api/images", body, {**headers, "Origin": "http://evil.example"})[0] == 403
    assert request(server, "/healthz", headers={"Host": "evil.example"})[0] == 400   # DNS rebinding
    status, page, headers = request(server, "/")
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert not re.search(rb"""(src|href)=["']?(https?:)?//""", page)


def test_uploads_are_evicted_oldest_first(server, photo, tmp_path):
    keys = [json.loads(upload(server, png_file(tmp_path / f"{i}.png", seed=i).read_bytes())[1])["id"]
            for i in range(5)]                                       # this server keeps 4
    assert request(server, f"/api/activations?image={keys[0]}&layer=conv1")[0] == 404
    assert all(request(server, f"/api/activations?image={k}&layer=conv1")[0] == 200 for k in keys[1:])


def test_image_store_bounds():
    pixels = torch.rand(1, 3, 32, 32)                                # 12 KiB
    store = serve.ImageStore(max_images=10, max_bytes=6 * pixels.numel() * 4 + 100)
    keys = [store.add(pixels) for _ in range(7)]
    assert len(store) == 6 and store.nbytes <= store.max_bytes
    with pytest.raises(KeyError, match="unknown image id"):
        store.get(keys[0])
    store.get(keys[1])                                               # used: now the most recent
    store.put_activation(keys[2], "conv1", torch.rand(12, 32, 32))   # 48 KiB more: the oldest go
    assert store.get(keys[2]).activations["conv1"].shape == (12, 32, 32)
    assert store.get(keys[1]) is not None and len(store) == 2 and store.nbytes <= store.max_bytes
    with pytest.raises(KeyError):
        store.get(keys[3])
    store.put_activation(keys[1], "big", torch.rand(64, 32, 32))     # larger than the whole budget: not kept
    assert "big" not in store.get(keys[1]).activations
    with pytest.raises(serve.UploadError) as refused:
        serve.decode_upload(bomb_png())
    assert refused.value.status == 413


def test_units_render_in_the_background_with_progress(server, monkeypatch):
    gate = threading.Event()
    real = worker_module.channel_icons
    seen = {}

    def held(*args, callback=None, **kwargs):
        seen["thread"] = threading.current_thread().name
        gate.wait(30)
        return real(*args, callback=callback, **kwargs)

    monkeypatch.setattr(worker_module, "channel_icons", held)
    status, body, headers = request(server, "/api/units/relu2/5.png")
    assert status == 202, body
    state = json.loads(body)
    assert state["status"] in ("queued", "rendering") and 0 <= state["progress"] < 1
    assert headers["Retry-After"] == "1"
    gate.set()
    deadline = time.time() + 60
    while status == 202 and time.time() < deadline:
        time.sleep(0.1)
        status, body, headers = request(server, "/api/units/relu2/5.png")
    assert status == 200 and headers["Content-Type"] == "image/png", body
    assert Image.open(io.BytesIO(body)).size == (32, 32)
    assert seen["thread"] == "luminate-render"                        # never on a request thread


def test_concurrent_requests_all_succeed(server, tiny, photo):
    key = json.loads(upload(server, photo.read_bytes())[1])["id"]
    x = tiny.preprocess(str(photo))
    layers = ["conv1", "relu1", "conv2", "relu2"]
    refs = {layer: luminate.activations(tiny, x, layer)[0].flatten(1).max(1).values for layer in layers}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda k: (layers[k % 4], request(server, f"/api/activations?image={key}&layer="
                                                                          f"{layers[k % 4]}")), range(16)))
    for layer, (status, body, _) in answers:
        assert status == 200, body
        assert torch.equal(torch.tensor(json.loads(body)["peaks"], dtype=torch.float32), refs[layer])


def test_unit_panel_reads_a_microscope_site(tiny, tmp_path, server):
    """With site=, a unit's top dataset examples and statistics come from the Microscope's own readers."""
    from luminate import microscope

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        png_file(photos / f"{i}.png", seed=10 + i)
    microscope.build(tiny, photos, tmp_path / "site", layers="relu2", units="0:4", top_k=3, steps=2, size=32,
                     progress=False)
    guided_first = microscope.shown_images(tmp_path / "site", "relu2", 1)
    want = microscope.top_examples(tmp_path / "site", "relu2", 1)
    with serve.running(tiny, site=tmp_path / "site", render_steps=2, render_size=32) as base:
        status, body, _ = request(base, "/api/units/relu2/1/examples")
        assert status == 200, body
        got = json.loads(body)
        assert [(e["value"], e["y"], e["x"]) for e in got["examples"]] == [(w["value"], w["y"], w["x"]) for w in want]
        assert got["stats"]["images"] == 12 and got["stats"]["status"] in ("ok", "dead", "constant")
        status, png, headers = request(base, "/api/units/relu2/1.png")    # the image the unit page shows first
        assert status == 200 and headers["X-Luminate-Image"] == "guided"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))),
                              np.asarray(luminate.images.to_pil(guided_first[0])))
        status, body, _ = request(base, "/api/units/relu2/1/shown")
        shown = json.loads(body)["images"]
        assert [s["name"] for s in shown] == ["guided", "unguided"]
        assert shown[0]["scores"] == microscope.shown_scores(tmp_path / "site", "relu2", 1)["guided"]
        status, png, headers = request(base, shown[1]["url"])
        assert status == 200 and headers["X-Luminate-Image"] == "unguided"
        assert Image.open(io.BytesIO(png)).size == (32, 32)
        assert request(base, "/api/units/relu2/1/shown/2.png")[0] == 404
        status, body, _ = request(base, "/api/units/relu2/9/shown")        # a unit the site did not render
        assert status == 404 and b"--render-units" in body
        status, jpeg, headers = request(base, got["examples"][0]["url"])
        assert status == 200 and Image.open(io.BytesIO(jpeg)).size == (32, 32)
        assert request(base, "/api/units/relu2/1/examples/7.jpg")[0] == 404    # 3 examples
        status, body, _ = request(base, "/api/units/conv1/1/examples")
        assert status == 404 and b"relu2" in body                               # the site's layers named
        assert json.loads(request(base, "/api/info")[1])["site"] == ["relu2"]
    status, body, _ = request(server, "/api/units/relu2/1/examples")
    assert status == 404 and b"--site" in body


@pytest.mark.slow
def test_feature_dictionary_is_one_more_layer(tiny, tmp_path, photo):
    """With features=, the dictionary's codes are the layer features:L: the numbers of Dictionary.encode, rendered
    in the background like units."""
    from luminate import features

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        png_file(photos / f"{i}.png", seed=20 + i)
    dictionary = features.learn(tiny, photos, "relu2", n_features=20, k=4, steps=20, out=tmp_path / "dict",
                                progress=False)
    with serve.running(tiny, features=tmp_path / "dict", render_steps=2, render_size=32) as base:
        info = json.loads(request(base, "/api/info")[1])
        assert info["features"] == {"layer": "features:relu2", "of": "relu2", "n_features": 20}
        assert info["layers"][-1]["name"] == "features:relu2"
        key = json.loads(upload(base, photo.read_bytes())[1])["id"]
        status, body, _ = request(base, f"/api/activations?image={key}&layer=features:relu2&unit=3")
        assert status == 200, body
        got = json.loads(body)
        codes = dictionary.encode(luminate.activations(tiny, tiny.preprocess(str(photo)), "relu2"))[0]
        assert got["shape"] == list(codes.shape)
        torch.testing.assert_close(torch.tensor(got["peaks"], dtype=torch.float32), codes.flatten(1).max(1).values)
        assert request(base, "/api/units/features:relu2/20.png")[0] == 404
        assert request(base, f"/api/activations?image={key}&layer=features:conv1")[0] == 400
        deadline, status = time.time() + 60, 202
        while status == 202 and time.time() < deadline:
            status, png, _ = request(base, "/api/units/features:relu2/3.png")
            time.sleep(0.1)
        assert status == 200 and Image.open(io.BytesIO(png)).size == (32, 32), png


def test_loopback_names():
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("localhost") and serve.is_loopback("::1")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.4")


@pytest.mark.slow
def test_cli_serves_a_model_file_on_loopback(tmp_path):
    """``luminate serve FILE.py:FUNCTION --port 0`` prints its URL, answers there, and stops on SIGTERM."""
    model_file = tmp_path / "tiny_net.py"
    model_file.write_text(TINY_FILE.format(tests=os.path.dirname(__file__)))
    cmd = [sys.executable, "-m", "luminate", "serve", f"{model_file}:build", "--port", "0", "--render-steps", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        status, body, _ = request(match.group(0), "/healthz")
        assert status == 200 and json.loads(body)["model"] == "tiny"
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0 and "stopped" in proc.stderr.read()                  # SIGTERM is how a server ends
    busy = serve.bind("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        out = subprocess.run(cmd[:-4] + ["--port", str(port)], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "choose another port" in out.stderr
    finally:
        busy.close()


@pytest.mark.slow
def test_lite0_activation_request_is_fast(lite0, flower_path):
    """A warm 224 px activation request answers well under a second (the forward pass stops at the layer)."""
    with serve.running(lite0, render_steps=4) as base:
        key = json.loads(upload(base, open(flower_path, "rb").read(), "flower.jpg")[1])["id"]
        times = []
        for layer in ("blocks.4", "blocks.9", "blocks.12"):
            started = time.perf_counter()
            status, body, _ = request(base, f"/api/activations?image={key}&layer={layer}")
            times.append(time.perf_counter() - started)
            assert status == 200, body
        ref = luminate.activations(lite0, lite0.preprocess(flower_path), "blocks.12")[0].flatten(1).max(1).values
        assert torch.allclose(torch.tensor(json.loads(body)["peaks"]), ref, atol=1e-5)
        assert sorted(times)[1] < 1.0, times


@pytest.fixture(scope="module")
def camera_browser(browser):
    """A second Chromium with the fake camera, launched from the session's Playwright (one sync Playwright per
    process: a second one fails inside the first one's event loop)."""
    import shutil

    from conftest import CHROMIUM_FLAGS

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    camera = browser.browser_type.launch(executable_path=executable, headless=True,
                                         args=CHROMIUM_FLAGS + ["--use-fake-device-for-media-stream",
                                                                "--use-fake-ui-for-media-stream"])
    try:
        yield camera
    finally:
        camera.close()


@pytest.mark.browser
@pytest.mark.slow
def test_page_upload_unit_panel_and_camera(camera_browser, server, photo):
    context = camera_browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 900})
    elsewhere = []
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith((server, "blob:", "data:"))
                  else (elsewhere.append(route.request.url), route.abort()))
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server)
        page.set_input_files("input[type=file]", str(photo))
        page.wait_for_function("Number(document.querySelector('#grid').dataset.frame) >= 1", timeout=20000)
        assert len(page.query_selector_all("[data-unit]")) >= 10
        assert "url(" in page.eval_on_selector("[data-unit] .map", "m => m.style.backgroundImage")   # live map
        peaks = page.eval_on_selector_all("[data-unit]", "ts => ts.map(t => Number(t.dataset.peak))")
        assert peaks == sorted(peaks, reverse=True)                      # sorted by activation
        page.select_option("#sort", "index")
        assert page.eval_on_selector_all("[data-unit]", "ts => ts.map(t => Number(t.dataset.unit))") == \
            list(range(len(peaks)))
        page.click("[data-unit='2']")
        page.wait_for_selector("img.unit-vis", timeout=30000)
        assert page.eval_on_selector("img.unit-vis", "i => i.naturalWidth") == 32
        assert page.text_content("#panel-title").endswith("unit 2")
        assert page.eval_on_selector("#where-map", "c => c.width") > 1     # where it fires, drawn
        page.select_option("#attr-class", index=1)
        page.wait_for_function("document.querySelector('#attr-note').textContent.includes('activation x gradient')")
        before = int(page.eval_on_selector("#grid", "g => g.dataset.frame"))
        page.click("#camera")
        page.wait_for_function(f"Number(document.querySelector('[data-frame]').dataset.frame) >= {before + 3}",
                               timeout=30000)
        assert page.text_content("#camera") == "Stop camera"
        page.click("#camera")
        assert not errors and not elsewhere, (errors, elsewhere)
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_unit_panel_shows_the_sites_guided_image_first_with_its_scores(browser, tiny, tmp_path, photo):
    from luminate import microscope

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        png_file(photos / f"{i}.png", seed=30 + i)
    microscope.build(tiny, photos, tmp_path / "site", layers="relu2", units="0:4", top_k=3, steps=2, size=32,
                     progress=False)
    scores = microscope.shown_scores(tmp_path / "site", "relu2", 2)
    with serve.running(tiny, site=tmp_path / "site", render_steps=2, render_size=32) as base:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(base)
            page.set_input_files("input[type=file]", str(photo))
            page.wait_for_function("Number(document.querySelector('#grid').dataset.frame) >= 1", timeout=20000)
            page.select_option("#layer", "relu2")
            page.wait_for_selector("[data-unit='2']", timeout=20000)
            page.click("[data-unit='2']")
            page.wait_for_function("document.querySelectorAll('img.unit-vis').length === 2", timeout=30000)
            kinds = page.eval_on_selector_all("img.unit-vis", "ims => ims.map(i => i.dataset.kind)")
            assert kinds == ["guided", "unguided"]
            note = page.text_content("#vis-note")
            assert f"path score {scores['guided']['path_score']:.2f}" in note and "held-out photos" in note
            assert not errors, errors
        finally:
            page.close()
