"""The command line: help for every command, the foundation commands, clear errors with exit code 2."""

import pytest
from PIL import Image

from luminate.cli import build_parser, main

COMMANDS = ["layers", "classify", "render", "dream", "gallery", "dictionary", "grid", "attribute", "groups",
            "explain", "collect", "atlas"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    subparsers = build_parser()._subparsers._group_actions[0].choices
    for name in COMMANDS:
        assert subparsers[name].description, f"luminate {name} --help has no description"


def test_classify_prints_top5(capsys, flower_path):
    assert main(["classify", "efficientnet_lite0", flower_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-1] == "daisy" and len(lines) == 6


def test_classify_skips_an_unreadable_file(capsys, tmp_path, flower_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert main(["classify", "efficientnet_lite0", str(bad), flower_path]) == 1
    out = capsys.readouterr().out
    assert "bad.jpg: skipped" in out and "daisy" in out


def test_layers_table(capsys):
    assert main(["layers", "efficientnet_lite0"]) == 0
    out = capsys.readouterr().out
    assert "blocks.15" in out and "1280" in out and "logits" in out


def test_render_writes_the_image_and_bad_channels_exit_2(capsys, tmp_path):
    out = tmp_path / "r.png"
    assert main(["render", "efficientnet_lite0", "blocks.4:3 + 0.5*blocks.4:5", "--size", "32", "--steps", "3",
                 "--quiet", "-o", str(out)]) == 0
    assert Image.open(out).size == (32, 32)
    assert main(["render", "efficientnet_lite0", "blocks.4:999", "--steps", "1", "--quiet", "-o", str(out)]) == 2
    assert "0..39" in capsys.readouterr().err
    assert main(["render", "efficientnet_lite0", "class:daisys", "--steps", "1", "--quiet", "-o", str(out)]) == 2
    assert "daisy" in capsys.readouterr().err
