"""The ``luminate`` command line.

Each command lives in its own module of this package with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (taking the parsed args, returning an exit code). :data:`COMMANDS`
lists the modules in the order ``luminate --help`` shows them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["models", "render", "blocks", "atlas", "microscope", "experiments", "quality"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="luminate",
        description="Luminate: see what neural networks see. Feature visualization, building blocks of "
                    "interpretability and activation atlases for PyTorch models. MODEL is a zoo name "
                    "(efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, inception_v1).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"luminate.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"luminate.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (KeyError, ValueError, IndexError, OSError, ImportError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"luminate {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
