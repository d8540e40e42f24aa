"""The text Microscope: top contexts that match recomputed activations, resumption, colouring, attribution, the
CLI's text branches and their errors, and a browser check of a unit page."""

import json
import os

import pytest
import torch

from luminate import microscope, models, text
from luminate.cli import main
from luminate.views.text import coloured_text, shade

pytest.importorskip("safetensors")

LINES = ["The function (with its arguments) returns a value.", "Call print(x) to show x.",
         "A \"quoted phrase\" and more words.", "No brackets in this one at all.", "",
         "Nested (a (b) c) brackets here.", "Some \u2603 snow in the text.", "len(items) counts items.",
         "A final line, plain and simple."]


@pytest.fixture(scope="module")
def char_model():
    return models.load("char_rnn")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "corpus.txt"
    path.write_bytes(("\n".join(LINES) + "\n").encode() + b"bad \xff line\n")
    return path


@pytest.fixture(scope="module")
def site(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["microscope", "char_rnn", str(corpus), "--layers", "rnn_1", "--units", "0:3", "--top", "3",
                 "--shard-size", "3", "-o", str(out), "--quiet"]) == 0
    return out


def test_top_contexts_match_recomputed_activations(site, char_model):
    texts = [l for l in LINES if l.strip()]
    acts = text.activations(char_model, texts, "rnn_1")
    for u in range(3):
        best = max(((float(a[:, u].max()), -i, int(a[:, u].argmax())) for i, a in enumerate(acts)))
        top = microscope.top_examples(site, "rnn_1", u)
        assert len(top) == 3
        assert top[0]["text"] == texts[-best[1]] and top[0]["position"] == best[2]
        assert abs(top[0]["value"] - best[0]) < 1e-5
        assert [t["value"] for t in top] == sorted((t["value"] for t in top), reverse=True)
    q = microscope.top_examples(site, "rnn_1", 0, which="quantiles")
    assert [e["quantile"] for e in q] == sorted(e["quantile"] for e in q)


def test_site_pages_and_what_was_left_out(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert pages == ["index.html", "layer_rnn_1.html", "units/rnn_1_0.html", "units/rnn_1_1.html",
                     "units/rnn_1_2.html"]
    index = (site / "index.html").read_text()
    assert "1 empty lines skipped" in index and "not UTF-8" in index and "\u2603" in index
    unit = (site / "units" / "rnn_1_1.html").read_text()
    for section in ("Top contexts", "Across the range", "Histogram", "Output effect", "Similar units",
                    "integrated gradients"):
        assert section in unit
    assert unit.count('class="tok peak"') >= 3


def test_rerun_changes_nothing_and_a_lost_shard_is_recomputed(site, corpus):
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in site.rglob("*") if p.is_file()}
    args = ["microscope", "char_rnn", str(corpus), "--layers", "rnn_1", "--units", "0:3", "--top", "3",
            "--shard-size", "3", "-o", str(site), "--quiet"]
    assert main(args) == 0
    pages = {p: v for p, v in files.items() if p.suffix == ".html"}
    assert all(p.stat().st_mtime_ns == v[0] for p, v in pages.items())
    shard = site / "data" / "text" / "rnn_1" / "shard_00001.npz"
    before = (site / "data" / "text" / "rnn_1" / "summary.json").read_text()
    shard.unlink()
    assert main(args) == 0
    assert shard.is_file()
    assert json.loads((site / "data" / "text" / "rnn_1" / "summary.json").read_text()) == json.loads(before)


def test_a_site_of_other_texts_is_refused(site, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("a different corpus (entirely)\n")
    assert main(["microscope", "char_rnn", str(other), "--layers", "rnn_1", "-o", str(site), "--quiet"]) == 2


def test_a_store_from_before_layer_keys_is_replaced_out_loud(site, corpus, tmp_path, caplog):
    """A text store written before folders were named by ``layer_key`` (no ``version`` in its manifest) is never
    half-read: it is replaced, with a warning naming the difference, and gives the same contexts."""
    import logging
    import shutil

    old = tmp_path / "old"
    shutil.copytree(site, old)
    manifest = old / "data" / "text" / "manifest.json"
    info = json.loads(manifest.read_text())
    info.pop("version")
    manifest.write_text(json.dumps(info))
    (old / "data" / "text" / "rnn_1").rename(old / "data" / "text" / "rnn@1")   # what another naming left
    with caplog.at_level(logging.WARNING, logger="luminate.text"):
        assert main(["microscope", "char_rnn", str(corpus), "--layers", "rnn_1", "--units", "0:3", "--top", "3",
                     "--shard-size", "3", "-o", str(old), "--quiet"]) == 0
    assert "replacing the text Microscope store" in caplog.text and "version" in caplog.text
    assert not (old / "data" / "text" / "rnn@1").exists()
    assert json.loads(manifest.read_text())["version"] == 2
    assert microscope.top_examples(old, "rnn_1", 1) == microscope.top_examples(site, "rnn_1", 1)


def test_build_takes_a_settings_value_and_the_old_attribution_name(site, corpus, char_model, tmp_path):
    """The Python entry point takes a TextMicroscopeSettings (any field also by name); ``attribution=`` still
    works for one release, with a DeprecationWarning, and means ``attribute=``."""
    import shutil

    from luminate.text.microscope import TextMicroscopeSettings, build

    copy = tmp_path / "copy"
    shutil.copytree(site, copy)   # the collected shards are reused: only the summaries are made again
    settings = TextMicroscopeSettings(units=[1, 2], top_k=3, shard_texts=3, attribute=False)
    built = build(char_model, corpus, copy, settings, layers="rnn_1", progress=False)
    units = built.layers[0]["units"]
    assert [u["unit"] for u in units] == [1, 2] and all("attribution" not in u for u in units)
    assert [e["text"] for e in units[0]["top"]] == [e["text"] for e in microscope.top_examples(site, "rnn_1", 1)]
    with pytest.warns(DeprecationWarning, match="attribute="):
        old = build(char_model, corpus, copy, layers="rnn_1", units="1", top_k=3, shard_texts=3, attribution=False)
    assert "attribution" not in old.layers[0]["units"][0]
    with pytest.raises(TypeError, match="layers="):
        build(char_model, corpus, copy, "rnn_1")
    with pytest.raises(TypeError, match="unknown option 'topk'"):
        build(char_model, corpus, copy, layers="rnn_1", topk=3)


def test_colouring():
    assert shade(0.0, 1.0) == "rgba(255,140,0,0.000)"
    assert shade(2.0, 1.0) == "rgba(255,140,0,1.000)"     # clipped
    assert shade(-0.5, 1.0) == "rgba(40,120,255,0.500)"    # negative: blue
    html = coloured_text(["<", "b", ">"], [0.1, 1.0, -0.2], 1.0, peak=1)
    assert "&lt;" in html and "<b>" not in html
    assert html.count('class="tok peak"') == 1 and 'title="1.000"' in html
    pieces = coloured_text(["play", "##ing", "now"], [0, 0, 0], 1.0, kind="word pieces")
    assert ">play<" in pieces and ">ing<" in pieces and "> now<" in pieces


def test_token_attribution_is_complete(char_model):
    from luminate.text.attribution import attribute_tokens

    att = attribute_tokens(char_model, "Call (print) now", "rnn_1", 14, n_steps=48)
    assert len(att.scores) == len("Call (print) now")
    assert abs(sum(att.scores) - (att.value - att.baseline)) <= abs(att.delta) + 1e-4
    assert abs(att.delta) < 0.1 * max(abs(att.value - att.baseline), 1e-3) + 0.05
    nxt = attribute_tokens(char_model, "The quick brown fo", target="x", n_steps=16)
    assert "next character 'x'" in nxt.what and len(nxt.scores) == len("The quick brown fo")


def test_attribute_command_for_text(tmp_path, capsys):
    out = tmp_path / "att.html"
    assert main(["attribute", "char_rnn", "see (this) here", "--layer", "rnn_1", "--unit", "14", "--steps", "8",
                 "-o", str(out), "--quiet"]) == 0
    page = out.read_text()
    assert 'class="tok' in page and "rnn_1 unit 14" in page


def test_wrong_kind_of_input_for_the_model(tmp_path, corpus, flower_path, capsys):
    code = main(["microscope", "efficientnet_lite0", str(corpus), "-o", str(tmp_path / "s1"), "--quiet"])
    assert code == 2 and "image model" in capsys.readouterr().err
    code = main(["microscope", "char_rnn", flower_path, "-o", str(tmp_path / "s2"), "--quiet"])
    assert code == 2 and "text model" in capsys.readouterr().err
    code = main(["dictionary", "char_rnn", flower_path, "-o", str(tmp_path / "d.html"), "--quiet"])
    assert code == 2 and "text model" in capsys.readouterr().err
    code = main(["render", "char_rnn", "rnn_1:3", "--steps", "1", "-o", str(tmp_path / "r.png")])
    assert code == 2 and "text model" in capsys.readouterr().err


@pytest.mark.browser
def test_unit_page_in_a_browser(site, page):
    page.goto((site / "units" / "rnn_1_0.html").as_uri())
    assert page.title() == "char_rnn rnn_1 unit 0"
    peaks = page.locator(".tok.peak")
    assert peaks.count() >= 3
    first = peaks.first
    assert float(first.get_attribute("title")) > 0
    colour = first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour.startswith("rgba(255, 140, 0") or colour == "rgb(255, 140, 0)"
    assert page.locator("svg[aria-label=histogram] rect").count() == 30
    assert not page.remote_requests
