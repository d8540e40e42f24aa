"""The ``luminate`` command line.

Each command lives in its own module of this package with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (taking the parsed args, returning an exit code). :data:`COMMANDS`
lists the modules in the order ``luminate --help`` shows them. Shared pieces (model arguments,
``--device``, output checks, help formatting) are in :mod:`luminate.cli.common`.

Before torch loads, the thread policy of :mod:`luminate.runtime` applies (idle OpenMP threads sleep),
so two commands at once, or a command beside other work, slow down by a fair share and not by a cliff.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import threading
import traceback

COMMANDS = ["models", "render", "blocks", "atlas", "microscope", "experiments", "quality", "serve", "features", "circuits"]
REPORT = ("this is a bug in Luminate, not a problem with your input. Please report it on Luminate's issue tracker "
          "with the command you ran and the traceback that --debug prints")
DESCRIPTION = (
    "Luminate: see what neural networks see. Feature visualization, building blocks of interpretability and "
    "activation atlases for PyTorch models. MODEL is a zoo name (efficientnet_lite0, efficientnet_lite1, "
    "efficientnet_lite2, inception_v1), path/to/file.py:function or package.module:function (a function returning "
    "a luminate Model, e.g. one calling luminate.models.wrap).\n\n"
    "Output files go into existing folders: a missing folder is an error (so a typo does not scatter results), "
    "and a file's format is checked before any work. Ctrl-C stops a command, keeps what it made so far, and exits "
    "130. --debug (anywhere on the line) shows full tracebacks.")


def build_parser() -> argparse.ArgumentParser:
    from luminate import __version__
    from luminate.cli.common import HelpFormatter, RawDescriptionHelpFormatter

    parser = argparse.ArgumentParser(prog="luminate", description=DESCRIPTION,
                                     formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"luminate {__version__}",
                        help="print Luminate's version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of any error (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"luminate.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"luminate.cli.{name}":
                continue
            raise
        module.register(sub)
    for command in sub.choices.values():  # defaults in every flag's help, one style everywhere
        raw = issubclass(command.formatter_class, argparse.RawDescriptionHelpFormatter)
        command.formatter_class = RawDescriptionHelpFormatter if raw else HelpFormatter
        _mention_nested_layers(command)
        for action in command._actions:  # the flags every command shares mean the same everywhere
            if not action.help and action.dest in COMMON_HELP:
                action.help = COMMON_HELP[action.dest]
    return parser


COMMON_HELP = {"seed": "random seed: the same seed gives the same result", "quiet": "no progress bars",
               "device": "where the model runs: cpu, cuda, cuda:1, mps", "output": "file or folder to write"}


LAYER_OPTIONS = re.compile(r"(^|_)layers?$")


def _mention_nested_layers(command: argparse.ArgumentParser) -> None:
    """Commands that take a layer say how to list them, nested ones included (``luminate layers MODEL --all``)."""
    from luminate.cli.common import LAYERS_HINT

    takes_layer = any(LAYER_OPTIONS.search(a.dest) for a in command._actions if a.option_strings)
    text = " ".join([command.description or "", command.epilog or ""] + [a.help or "" for a in command._actions])
    if takes_layer and "--all" not in text:
        command.description = (command.description or "").rstrip() + f"\n\nLayers: {LAYERS_HINT}."


_OBJECTIVE_LIKE = re.compile(r"-\s*[\w(.]")


def protect_leading_minus(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Let positional values start with ``-`` (``luminate render MODEL "-blocks.9:7"``): an argument that begins
    with ``-`` and holds a ``:`` or ``(``, and is not an option of its command, gets a leading space, which
    argparse reads as a value and the objective parser ignores."""
    from luminate.cli.checks import known_options

    known = known_options(parser)
    out = []
    for arg in argv:
        if (arg.startswith("-") and not arg.startswith("--") and arg.split("=")[0] not in known
                and _OBJECTIVE_LIKE.match(arg) and (":" in arg or "(" in arg)):
            arg = " " + arg
        out.append(arg)
    return out


def _is_input_error(exc: BaseException) -> bool:
    """An error Luminate raised on purpose about its input (printed as one line) rather than a bug.

    Deliberate errors are ``raise``\\ d by Luminate's own code (the failing line is a ``raise`` statement in
    the package), or are the operating system refusing a file (missing, unreadable, a folder), or a missing
    optional dependency that names what to install."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    if _storage_error(exc) is not None:   # a full disk, a read-only folder: the user's to fix, not a bug
        return True
    from luminate.cli.checks import UsageError

    if isinstance(exc, UsageError):
        return True
    if isinstance(exc, ImportError):
        return "install" in str(exc)
    if not isinstance(exc, (ValueError, KeyError, IndexError, TypeError, OSError, RuntimeError, LookupError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    last = frames[-1]
    return os.path.abspath(last.filename).startswith(package + os.sep) and (last.line or "").lstrip().startswith(
        "raise")


def _storage_error(exc: BaseException) -> BaseException | None:
    """The full-disk / read-only / permission error behind ``exc`` (itself or a cause), as a
    :class:`luminate.cache.StorageError` naming the path, or None."""
    from luminate.cache import storage_error

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            found = storage_error(exc, exc.filename or "the output folder")
            if found is not None:
                return found
        exc = exc.__cause__ or exc.__context__
    return None


def _message(exc: BaseException) -> str:
    if (storage := _storage_error(exc)) is not None and not isinstance(exc, PermissionError):
        return str(storage)
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if re.search(r"\blayer", text) and re.search(r"unknown|no layer|not a layer|did you mean|close", text) \
            and "--all" not in text:
        from luminate.cli.common import LAYERS_HINT

        text += f"\n({LAYERS_HINT})"
    return text


def _install_interrupt_handler() -> None:
    """Ctrl-C: the running render stops and returns its partial result; every later render raises
    KeyboardInterrupt (:func:`luminate.runtime.interrupted`), so a multi-render job stops too."""
    if threading.current_thread() is not threading.main_thread():
        return
    from luminate import runtime

    def handler(signum, frame):
        runtime.request_interrupt()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:
        args = parser.parse_args(protect_leading_minus(argv, parser))
    except SystemExit as exc:   # argparse's own error (exit 2): file names that start with '-' get a hint
        from luminate.cli.checks import dash_hint

        if exc.code == 2 and (hint := dash_hint(argv, parser)):
            print(hint, file=sys.stderr)
        raise
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from luminate import runtime
    from luminate.cli.common import check_outputs

    check_outputs(_command_parser(parser, args.command), args)
    if not getattr(args, "quiet", False) and (notice := runtime.busy_notice()):
        print(notice, file=sys.stderr)
    runtime.clear_interrupt()
    _install_interrupt_handler()
    try:
        status = int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"luminate {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted into input errors and bugs below
        if runtime.interrupted() and not debug:
            # Ctrl-C came first; what failed after it (e.g. a loader worker the same Ctrl-C stopped) is its echo
            print(f"luminate {args.command}: interrupted", file=sys.stderr)
            return 130
        if debug:
            traceback.print_exc()
        if _is_input_error(exc):
            print(f"luminate {args.command}: error: {_message(exc)}", file=sys.stderr)
            return 2
        if not debug:
            print(f"luminate {args.command}: internal error: {type(exc).__name__}: {exc}\n{REPORT} "
                  f"(rerun with --debug to see it).", file=sys.stderr)
        else:
            print(REPORT + ".", file=sys.stderr)
        return 70
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if runtime.interrupted():
        print(f"luminate {args.command}: interrupted; the partial result above was saved", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
