"""The gallery's sheets and pasteable objectives, the diversity weight, and multi-stage progress."""

from __future__ import annotations

import math

import pytest
import torch

from luminate import progress
from luminate.objectives.parse import parse
from luminate.recipes import cli_class, cli_objective, diversity_weight
from luminate.views.gallery import sheet_columns


def test_sheets_have_no_empty_cells():
    for n in range(1, 17):
        cols = sheet_columns(n)
        assert n % cols == 0 and cols >= math.sqrt(n) - 1e-9, (n, cols)
    assert [sheet_columns(n) for n in (2, 3, 4, 6, 7)] == [2, 3, 2, 3, 7]


def test_objectives_are_in_the_cli_syntax():
    assert parse(cli_objective("blocks.9", 7)).name == "channel(blocks.9, 7)"
    assert parse(cli_class("sea anemone")).name == parse('class:"sea anemone"').name
    assert cli_class("daisy") == "class:daisy"
    mix = parse(f'{cli_objective("blocks.9", 7, 0.6)} + {cli_objective("blocks.9", 3, 0.4)}')
    assert "blocks.9" in mix.layers


def test_diversity_weight_follows_the_channel_scale():
    assert diversity_weight(4.0) == pytest.approx(2.0)
    assert diversity_weight(200.0) == pytest.approx(100.0)   # Lucid's 1e2 at InceptionV1's scale
    assert diversity_weight(-6.0) == pytest.approx(3.0) and diversity_weight(0.0) > 0


def test_job_prints_stages_counts_units_and_labels_bars(capsys):
    with progress.Job("explain", stages=["attribution", "dictionary"]) as job:
        assert progress.current() is job
        job.stage("attribution", "blocks.10 for daisy")
        progress.units(cached=2, unit="icon")
        job.stage("dictionary")
        b = progress.bar(4, "render")
        assert b.desc.startswith("dictionary: render")
        b.close()
        progress.units(rendered=3)
    assert progress.current() is None
    progress.units(rendered=5)  # outside a job: nothing to count, no error
    err = capsys.readouterr().err
    assert "[1/2] attribution: blocks.10 for daisy" in err and "[2/2] dictionary" in err
    assert "explain done" in err and "icons: 3 rendered, 2 from cache" in err
    assert progress.bar(3, "x", enabled=False) is None


@pytest.mark.slow
def test_gallery_objectives_paste_into_render_and_sheets_fill(lite0, tmp_path, monkeypatch):
    from PIL import Image

    from luminate.recipes import gallery
    from luminate.views.gallery import write_gallery

    experiments = gallery(lite0, steps=2, size=32, progress=False)
    pasted = [o for e in experiments for o in e.objectives if o]
    assert len(pasted) >= 12
    for text in pasted:
        parse(text).bind(lite0)  # parses, and every layer and class exists on the model
    page = write_gallery(lite0, experiments, tmp_path / "g")
    html = page.read_text()
    assert all(o.replace('"', "&quot;") in html or o in html for o in pasted)
    dream = next(e for e in experiments if e.key == "deepdream")
    sheet = Image.open(tmp_path / "g" / "deepdream.png")
    h, w = dream.images.shape[-2:]
    assert sheet.width > 3 * w and sheet.height < 2 * h   # one row of three, no empty quarter
    diverse = next(e for e in experiments if e.key == "diverse")
    assert 0 < diverse.extra["weight"] < 1e2
    assert not torch.allclose(dream.images[0], dream.images[2], atol=0.02)  # the deep layer changed the photo


def test_the_progress_job_is_a_context_variable():
    """A job is seen in its own context only: another thread does not count into it."""
    import threading

    from luminate import progress

    with progress.Job("outer", stages=1, enabled=False) as job:
        assert progress.current() is job
        seen = []
        worker = threading.Thread(target=lambda: seen.append(progress.current()))
        worker.start()
        worker.join()
        assert seen == [None]
    assert progress.current() is None
