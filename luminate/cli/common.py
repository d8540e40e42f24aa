"""What every ``luminate`` command shares: the model arguments, output checks made before any work, help
formatting with defaults, and the interrupt flag.

Commands add their model arguments with :func:`add_model_args` and load with :func:`load_model`, so
``--device`` and MODEL mean the same everywhere: :func:`load_model_arg` is the one resolver of a MODEL argument
(a zoo name, ``path/to/file.py:function`` or ``package.module:function``). Output paths are checked by :func:`check_outputs` before a command
runs: an unknown format or a missing folder is an error that names the fix, never a surprise after the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LAYERS_HINT = "`luminate layers MODEL` lists the layers; `luminate layers MODEL --all` adds nested ones " \
              "such as blocks.9.depthwise"
HTML_SUFFIXES = (".html", ".htm")
#: Output options checked before a command runs, and what they hold when their default does not say.
IMAGE_OPTIONS = ("png", "gif", "save_patch")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not already state its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default in (None, False, argparse.SUPPRESS)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps the description's and epilog's line breaks."""


MODEL_FORMS = ("a zoo name (efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, inception_v1), "
               "path/to/file.py:function or package.module:function (a function taking no arguments that returns "
               "a luminate Model, e.g. one calling luminate.models.wrap(net, 224, preset='imagenet'))")
MODEL_HELP = "MODEL: " + MODEL_FORMS


def add_model_args(p: argparse.ArgumentParser, model_help: str = MODEL_HELP) -> None:
    """The ``model`` positional and ``--device``, the same on every command that runs a model."""
    p.add_argument("model", help=model_help)
    p.add_argument("--device", default="cpu",
                   help="where the model runs: cpu, cuda, cuda:1, mps (default cpu)")


def load_model(args: argparse.Namespace, **kwargs):
    """The command's MODEL argument as a Model on its ``--device`` (:func:`load_model_arg`)."""
    return load_model_arg(args.model, getattr(args, "device", None) or None, **kwargs)


def load_model_arg(spec: str, device: str | None = None, *, weights: bool = True):
    """The one resolver of a MODEL argument, for every command: a Model on ``device``.

    Forms: a zoo name (``efficientnet_lite0``; ``weights=False`` builds it with random weights, for commands that
    only need shapes); ``path/to/file.py:function`` (the file is run as a module, its folder importable meanwhile);
    ``package.module:function`` (imported). The function takes no arguments and returns a
    :class:`luminate.models.Model` (e.g. ``return luminate.models.wrap(net, 224, preset="imagenet")``). Errors say
    which form was understood and what was expected.
    """
    from torch import nn

    from luminate import models
    from luminate.cli.checks import check_device

    check_device(device)  # `--device cuda` without CUDA: one line, before any model is built
    spec = str(spec).strip()
    if ":" not in spec:
        key = spec.lower().replace("-", "_")
        if key not in models.available():
            hint = ("; a file needs its function after a colon: " + spec + ":build") if spec.endswith(".py") else ""
            raise KeyError(f"unknown model {spec!r}{hint}. MODEL is {MODEL_FORMS}. Zoo: {', '.join(models.available())}")
        return models.load(spec, weights=weights, device=device)
    where, _, func = spec.rpartition(":")
    if not where or not func.isidentifier():
        raise ValueError(f"MODEL {spec!r}: expected path/to/file.py:function or package.module:function, with a "
                         f"function name after the colon")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _module_from_file(Path(where), spec)
        what = f"the file {where}"
    else:
        import importlib

        try:
            module = _users(spec, lambda: importlib.import_module(where), ModuleNotFoundError)
        except ModuleNotFoundError as exc:
            raise ValueError(f"MODEL {spec!r}: cannot import the module {where!r} ({exc}); expected "
                             f"package.module:function with the module importable (installed or on PYTHONPATH), "
                             f"or path/to/file.py:function") from None
        what = f"the module {where}"
    build = getattr(module, func, None)
    if not callable(build):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"MODEL {spec!r}: {what} has no function {func!r}"
                         + (f"; its functions: {', '.join(found)}" if found else ""))
    _takes_no_arguments(build, spec)
    model = _users(spec, build)
    if not isinstance(model, models.BaseModel):   # an image Model or a TextModel
        kind = type(model).__name__
        extra = (f" A bare {kind} has no input contract: return luminate.models.wrap(net, size, preset='imagenet') "
                 "(or mean=/std=, value_range=) instead.") if isinstance(model, nn.Module) else ""
        raise TypeError(f"MODEL {spec!r}: {func}() returned a {kind}, expected a luminate Model.{extra}")
    return model.to(device) if device else model


def _takes_no_arguments(build, spec: str) -> None:
    """Refuse a MODEL function that needs arguments (``os.path:join``) before calling it."""
    import inspect

    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        return
    needed = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                                             p.KEYWORD_ONLY)]
    if needed:
        from luminate.cli.checks import UsageError

        raise UsageError(f"MODEL {spec!r}: the function needs arguments ({', '.join(needed)}); MODEL names a "
                         "function that takes none and returns a luminate Model")


def _users(spec: str, call, passes: type[BaseException] | tuple = ()):
    """Run the user's code (their file, module or function): an error raised in it is reported as theirs, with
    the file, line and message (exit 2), not as a bug in Luminate."""
    import traceback

    from luminate.cli.checks import UsageError

    try:
        return call()
    except passes:
        raise
    except Exception as exc:  # noqa: BLE001 - anything their code raises is theirs to fix
        package = str(Path(__file__).resolve().parents[1])  # frames in Luminate or importlib are not theirs
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not f.filename.startswith("<") and not str(Path(f.filename).resolve()).startswith(package)]
        if isinstance(exc, SyntaxError) and exc.filename:
            where = f"{exc.filename}, line {exc.lineno}"
        elif frames:
            where = f"{frames[-1].filename}, line {frames[-1].lineno}"
        else:
            where = "its code"
        message = exc.msg if isinstance(exc, SyntaxError) else exc
        raise UsageError(f"MODEL {spec!r}: your code raised {type(exc).__name__} at {where}: {message}; fix it in "
                         "your code and rerun") from exc


def _module_from_file(path: Path, spec: str):
    """Run a Python file as a module (registered in ``sys.modules`` so its classes pickle), its folder on
    ``sys.path`` while it runs so it can import its neighbours."""
    import importlib.util
    import sys

    if not path.is_file():
        raise FileNotFoundError(f"MODEL {spec!r}: no file {str(path)!r}; expected path/to/file.py:function "
                                f"(or package.module:function, or a zoo name)")
    name = f"luminate_user_model_{path.stem}" if path.stem in sys.modules else path.stem
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"MODEL {spec!r}: {str(path)!r} cannot be loaded as Python; expected path/to/file.py:function")
    module = importlib.util.module_from_spec(loader_spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        _users(spec, lambda: loader_spec.loader.exec_module(module))
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def image_formats() -> list[str]:
    """File suffixes Pillow can write (``.png``, ``.jpg``, ...)."""
    from PIL import Image

    Image.init()
    return sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)


def _kind(path: str | None) -> str:
    suffix = Path(path).suffix.lower() if path else ""
    if not suffix:
        return "folder"
    return "html" if suffix in HTML_SUFFIXES else "image"


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written, before any work: an unknown format (the error lists the
    formats), or a folder that does not exist (the error says to create it; Luminate never creates a
    misspelled folder silently). ``-o``'s kind (image, HTML page, folder) follows the command's default."""
    checks = []
    if getattr(args, "output", None):
        checks.append(("-o", args.output, _kind(parser.get_default("output"))))
    for dest in IMAGE_OPTIONS:
        value = getattr(args, dest, None)
        if isinstance(value, str) and value:
            checks.append((f"--{dest.replace('_', '-')}", value, "image"))
    for flag, value, kind in checks:
        path = Path(value)
        suffix = path.suffix.lower()
        if kind == "image":
            formats = image_formats()
            if suffix not in formats:
                common = " ".join(s for s in (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
                                  if s in formats)
                what = f"unknown image format {suffix!r}" if suffix else "no image format (file suffix)"
                parser.error(f"{flag} {value}: {what}; use one of {common} (or another format Pillow writes)")
        elif kind == "html" and suffix not in HTML_SUFFIXES:
            parser.error(f"{flag} {value}: this command writes an HTML page; give a name ending in .html")
        parent = path.parent
        if not parent.exists():
            parser.error(f"{flag} {value}: the folder {str(parent)!r} does not exist; create it first "
                         f"(mkdir -p {parent}) or choose another path")
        if parent.exists() and not parent.is_dir():
            parser.error(f"{flag} {value}: {str(parent)!r} is a file, not a folder")
        if kind == "folder" and path.exists() and not path.is_dir():
            parser.error(f"{flag} {value}: this command writes a folder, and {value!r} is an existing file")
