"""The command line's edges, in-process through luminate.cli.main: leading-minus objectives, output checks
before any work, parse hints, Ctrl-C, --version, help and defaults on every flag, --debug and bug reports,
the layer table, and the thread policy of luminate.runtime."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import pytest
import torch

from luminate import runtime
from luminate.cli import build_parser, main, protect_leading_minus
from luminate.objectives.parse import ObjectiveSyntaxError, parse


def _commands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    import luminate

    assert capsys.readouterr().out.strip() == f"luminate {luminate.__version__}"


def test_leading_minus_objective_is_a_value_not_an_option():
    parser, _ = _commands()
    argv = protect_leading_minus(["render", "m", "-blocks.9:7", "-o", "x.png", "--steps", "3"], parser)
    args = parser.parse_args(argv)
    assert args.objective.strip() == "-blocks.9:7" and args.output == "x.png" and args.steps == 3
    assert parse(args.objective).name == "-channel(blocks.9, 7)"
    # options keep working, even ones that look like values
    assert protect_leading_minus(["render", "m", "blocks.9:7", "-o", "a:b.png"], parser)[3] == "-o"


@pytest.mark.parametrize("output, expected", [("x.bmpx", "unknown image format '.bmpx'"),
                                              ("no-such-folder/x.png", "mkdir -p no-such-folder"),
                                              ("x", "no image format")])
def test_bad_output_is_refused_before_any_work(output, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr("luminate.models.load", no_model)
    with pytest.raises(SystemExit) as exc:
        main(["render", "efficientnet_lite0", "blocks.9:7", "--steps", "3000", "-o", output])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and (".png" in err or "mkdir" in err)
    assert not (tmp_path / "no-such-folder").exists()


def test_html_and_folder_outputs_are_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["explain", "efficientnet_lite0", "flower.jpg", "-o", "page.png"])
    assert "HTML page" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["gallery", "efficientnet_lite0", "-o", "file"])
    assert "existing file" in capsys.readouterr().err


@pytest.mark.parametrize("text, hint", [
    ("clas:daisy", "did you mean 'class:daisy'"),
    ("class:sea anemone", 'class:"sea anemone"'),
    ("blocks.9:-1", "cannot be negative"),
    ("channel(blocks.9, 7)", "write 'blocks.9:7'"),
    ("daisy", "'class:daisy'"),
])
def test_parse_errors_name_the_fix(text, hint):
    with pytest.raises(ObjectiveSyntaxError) as exc:
        parse(text)
    assert hint in str(exc.value)


def test_parse_error_is_one_line_error_in_the_cli(capsys):
    assert main(["render", "efficientnet_lite0", "clas:daisy", "--size", "32", "--steps", "2", "--quiet",
                 "-o", "unused.png"]) == 2
    err = capsys.readouterr().err
    assert "class:daisy" in err and "Traceback" not in err and "bug" not in err


def test_every_flag_has_help_and_shows_its_default():
    _, commands = _commands()
    missing, no_default = [], []
    for name, command in commands.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[-1]
            if not action.help:
                missing.append(f"{name} {flag}")
            elif action.default not in (None, False) and "default" not in text.split("\noptions:", 1)[-1].split(flag, 1)[-1][:2000]:
                no_default.append(f"{name} {flag}")
    assert not missing, f"flags without help: {missing}"
    assert not no_default, f"flags whose help does not show the default: {no_default}"


def test_commands_taking_layers_mention_nested_layers():
    _, commands = _commands()
    for name, command in commands.items():
        if any(a.dest in ("layer", "layers") for a in command._actions if a.option_strings):
            assert "--all" in command.format_help(), f"luminate {name} --help does not mention `luminate layers --all`"


def test_model_commands_take_device():
    _, commands = _commands()
    for name in ("render", "gallery", "classify", "collect"):
        assert any("--device" in a.option_strings for a in commands[name]._actions), name


def test_bug_says_bug_and_debug_shows_traceback(monkeypatch, capsys):
    def broken(args):
        return {}["oops"]  # a bug, not an input error

    monkeypatch.setattr("luminate.cli.models.run_layers", broken)
    assert main(["layers", "efficientnet_lite0"]) == 70
    err = capsys.readouterr().err
    assert "this is a bug" in err and "--debug" in err and "Traceback" not in err
    assert main(["layers", "efficientnet_lite0", "--debug"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err


def test_input_error_is_one_line(capsys):
    assert main(["layers", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "bug" not in err and "Traceback" not in err


def test_layers_hides_nested_and_says_how_to_see_them(capsys):
    assert main(["layers", "efficientnet_lite0"]) == 0
    out = capsys.readouterr().out
    assert "blocks.9 " in out and "blocks.9.depthwise" not in out and "--all" in out
    assert main(["layers", "efficientnet_lite0", "--all"]) == 0
    assert "blocks.9.depthwise" in capsys.readouterr().out


def test_layer_table_is_a_list_that_prints_as_a_table():
    import luminate

    table = luminate.models.layers("efficientnet_lite0")
    assert isinstance(table, list) and len(table) > 100
    assert table["blocks.9"].shape == (112, 14, 14) and table[0].name == "stem"
    text = repr(table)
    assert text.splitlines()[1].split()[:4] == ["layer", "type", "channels", "shape"]
    assert any(line.split()[:3] == ["blocks.9", "MBConv", "112"] for line in text.splitlines())
    assert "<table>" in table._repr_html_() and "blocks.9.depthwise" in table._repr_html_()
    with pytest.raises(KeyError, match="blocks.9"):
        table["blocks.99"]


@pytest.fixture
def tiny_render_cli(monkeypatch):
    """Renders through the CLI at 32 px with an interrupt raised by the real SIGINT handler at step 3."""
    render_module = sys.modules["luminate.render"]  # the module (luminate.render is also the function)
    real = render_module.render

    def render(*args, **kwargs):
        def callback(step, images, scores):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)

        return real(*args, **dict(kwargs, callback=callback))

    monkeypatch.setattr(render_module, "render", render)
    yield
    runtime.clear_interrupt()


def test_ctrl_c_saves_partial_image_says_interrupted_and_exits_130(tiny_render_cli, tmp_path, capsys):
    out = tmp_path / "int.png"
    code = main(["render", "efficientnet_lite0", "blocks.9:7", "--size", "32", "--steps", "500", "--quiet",
                 "-o", str(out)])
    assert code == 130
    assert out.stat().st_size > 0
    err = capsys.readouterr().err
    assert "interrupted after 3 of 500 steps" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_an_interrupt_stops_the_renders_that_follow():
    from luminate.render import render

    from luminate.models import wrap

    net = wrap(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 16, value_range=(0, 1))
    runtime.request_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            render(net, "0:1", steps=2, size=16, progress=False)
    finally:
        runtime.clear_interrupt()


def test_thread_policy_helpers(monkeypatch):
    assert runtime.worker_threads(2, cores=2) == 1
    assert runtime.worker_threads(1, cores=8) == 8 and runtime.worker_threads(16, cores=8) == 1
    assert runtime.busy_notice(cores=2, load=0.5) is None
    notice = runtime.busy_notice(cores=2, load=3.0)
    assert "busy" in notice and "load 3.0 on 2 cores" in notice
    before = torch.get_num_threads()
    try:
        assert runtime.share_cpu(threads=1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_importing_luminate_writes_no_environment_but_the_command_line_waits_passively():
    from luminate_launcher import BRIEF_SPIN

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, luminate, torch; print(os.environ.get('OMP_WAIT_POLICY'), luminate.runtime.passive_waiting())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False"]
    launch = ("import os, sys, luminate_launcher; sys.argv = ['luminate', '--version']\n"
              "try: luminate_launcher.main()\nexcept SystemExit: pass\n"
              "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", launch], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["PASSIVE", BRIEF_SPIN]  # sleep, after a brief spin
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a policy the user chose is kept
    out = subprocess.run([sys.executable, "-c", launch], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["ACTIVE", "None"]


def test_renders_take_the_steps_asked_for_whatever_the_environment(monkeypatch):
    """No test switch in the library: the old LUMINATE_TINY variable changes nothing (tests pass steps)."""
    from luminate.models import wrap
    from luminate.render import render

    net = wrap(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 16, value_range=(0, 1))
    monkeypatch.setenv("LUMINATE_TINY", "1")
    result = render(net, "0:1", steps=5, thresholds=[3, 5], size=16, progress=False)
    assert len(result.history) == 5 and result.thresholds == [3, 5] and result.settings["steps"] == 5


def test_the_tiny_steps_fixture_sets_every_steps_flag(monkeypatch, tmp_path, tiny_steps):
    seen = {}

    def fake_attribute(args):
        seen.update(steps=args.steps, icon_steps=args.icon_steps)
        return 0

    monkeypatch.setattr("luminate.cli.blocks.run_attribute", fake_attribute)
    assert main(tiny_steps(["attribute", "efficientnet_lite0", "flower.jpg", "--steps", "64", "--quiet",
                            "-o", str(tmp_path / "a.html")])) == 0
    assert seen == {"steps": 2, "icon_steps": 2}
    assert main(["attribute", "efficientnet_lite0", "flower.jpg", "--steps", "64", "--quiet",
                 "-o", str(tmp_path / "a.html")]) == 0
    assert seen["steps"] == 64, "without the fixture a command takes the steps it is given"


def test_the_interrupt_is_an_event_of_its_own_context():
    """An interrupt requested in one thread's context does not stop renders in another (no process-wide flag)."""
    import threading

    runtime.clear_interrupt()
    runtime.request_interrupt()
    try:
        seen = []
        worker = threading.Thread(target=lambda: seen.append(runtime.interrupted()))
        worker.start()
        worker.join()
        assert runtime.interrupted() and seen == [False]
        assert runtime.interrupt_event().is_set()
    finally:
        runtime.clear_interrupt()
    assert not runtime.interrupted()
