"""MODEL at the command line: a zoo name, path/to/file.py:function or package.module:function, one resolver."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from luminate.cli import main
from luminate.cli.common import load_model_arg
from luminate.models import Model

NET = textwrap.dedent("""
    import torch
    from torch import nn
    import luminate

    def build():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
        return luminate.models.wrap(net.eval(), 32, value_range=(0, 1), name="tinynet")

    def bare():
        return torch.nn.Conv2d(3, 4, 3)

    def helper_not_a_model():
        return 3
""")


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "tinynet_build.py"
    path.write_text(NET)
    return path


def test_file_and_module_forms_give_the_functions_model(net_file, tmp_path, monkeypatch):
    model = load_model_arg(f"{net_file}:build")
    assert isinstance(model, Model) and model.name == "tinynet" and model.size == (32, 32)
    monkeypatch.syspath_prepend(str(tmp_path))
    same = load_model_arg("tinynet_build:build", "cpu")
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(model(x), same(x))


def test_errors_name_the_expected_forms(net_file):
    with pytest.raises(KeyError, match=r"path/to/file\.py:function"):
        load_model_arg("efficientnet_lite9")
    with pytest.raises(KeyError, match=r":build"):            # a file without its function
        load_model_arg(str(net_file))
    with pytest.raises(FileNotFoundError, match="no file"):
        load_model_arg("missing_dir/net.py:build")
    with pytest.raises(ValueError, match=r"no function 'biuld'.*build"):
        load_model_arg(f"{net_file}:biuld")
    with pytest.raises(TypeError, match=r"bare Conv2d.*wrap"):
        load_model_arg(f"{net_file}:bare")
    with pytest.raises(TypeError, match="returned a int"):
        load_model_arg(f"{net_file}:helper_not_a_model")
    with pytest.raises(ValueError, match="cannot import the module 'no_such_pkg.mod'"):
        load_model_arg("no_such_pkg.mod:build")


def test_every_command_takes_a_model_file(net_file, capsys):
    assert main(["layers", f"{net_file}:build"]) == 0
    out = capsys.readouterr().out
    assert "tinynet" in out and "Conv2d" in out
    assert main(["layers", "nonexistent_file.py:build"]) == 2
    assert "no file" in capsys.readouterr().err


def test_model_help_lists_the_forms(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    assert "file.py:function" in capsys.readouterr().out


def test_loaded_file_module_is_importable_by_name(net_file):
    load_model_arg(f"{net_file}:build")
    assert any(name.endswith("tinynet_build") for name in sys.modules)
