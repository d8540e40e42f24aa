"""What every ``luminate`` command shares: the model arguments, output checks made before any work, help
formatting with defaults, and the interrupt flag.

Commands add their model arguments with :func:`add_model_args` and load with :func:`load_model`, so
``--device`` means the same everywhere. Output paths are checked by :func:`check_outputs` before a command
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


def add_model_args(p: argparse.ArgumentParser, model_help: str = "zoo name, e.g. efficientnet_lite0 "
                   "(efficientnet_lite1, efficientnet_lite2, inception_v1)") -> None:
    """The ``model`` positional and ``--device``, the same on every command that runs a model."""
    p.add_argument("model", help=model_help)
    p.add_argument("--device", default="cpu",
                   help="where the model runs: cpu, cuda, cuda:1, mps (default cpu)")


def load_model(args: argparse.Namespace, **kwargs):
    """``models.load(args.model, device=args.device, **kwargs)``."""
    from luminate import models

    return models.load(args.model, device=getattr(args, "device", None) or None, **kwargs)


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
