"""The text branches of ``luminate microscope`` and ``luminate attribute``: a text model (char_rnn, minilm_l6) reads
TEXTS (a .txt file, one text per line, or a folder of .txt files) instead of images."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _is_file(source: str) -> bool:
    """Whether ``source`` names a file; a text too long to be a path (or otherwise not one) is not."""
    try:
        return Path(source).is_file()
    except (OSError, ValueError):
        return False


def _check_pair(model, source: str, command: str) -> None:
    """A text model needs text, an image model images: a clear error for either mix-up."""
    is_text = getattr(model, "is_text", False)
    p = Path(source)
    if is_text and _is_file(source) and p.suffix.lower() != ".txt":
        raise ValueError(f"{model.name} is a text model, so `luminate {command}` reads text: give a .txt file (one "
                         f"text per line) or a folder of .txt files, not {source!r}")
    if not is_text and p.suffix.lower() == ".txt":
        raise ValueError(f"{model.name} is an image model, but {source!r} is a text file: give images, or a text "
                         "model (char_rnn, minilm_l6) for text")


def run_text_microscope(args: argparse.Namespace, model, start: float) -> int:
    """``luminate microscope TEXT_MODEL TEXTS -o SITE``: the text Microscope (luminate.text.microscope)."""
    from luminate.data.store import site_lock
    from luminate.text.microscope import TextMicroscopeSettings, build
    from luminate.views.text import write_site

    _check_pair(model, args.images, "microscope")
    units = None if args.units.strip().lower() == "all" else args.units
    settings = TextMicroscopeSettings(units=units, top_k=args.top, shard_texts=args.shard_size)
    with site_lock(args.output):  # one run per site folder, as for image sites
        site = build(model, args.images, args.output, settings, layers=args.layers, progress=not args.quiet)
        index = write_site(site)
    n_units = sum(len(layer["units"]) for layer in site.layers)
    print(f"{index}: {n_units} units of {', '.join(l['name'] for l in site.layers)} over {len(site.texts)} texts "
          f"({time.perf_counter() - start:.1f}s)")
    notes = [site.texts.summary()] if site.texts.skipped else []
    if site.unknown:
        notes.append(f"{sum(site.unknown.values())} characters outside {model.name}'s vocabulary were read as "
                     f"unknown ({', '.join(repr(c) for c in list(site.unknown)[:5])})")
    if site.long_texts:
        notes.append(f"{site.long_texts} texts longer than the model's window of {model.contract.max_length} tokens "
                     "were read in consecutive windows")
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def run_text_attribute(args: argparse.Namespace, model, start: float) -> int:
    """``luminate attribute TEXT_MODEL "some text" --layer L --unit U -o page.html``: token attribution as coloured
    text (a file path reads its first text)."""
    from luminate.text.attribution import attribute_tokens
    from luminate.views.text import attribution_page

    source = args.image
    if _is_file(source):
        from luminate.text.core import read_texts

        source = read_texts(Path(source))[0]
    unit = getattr(args, "unit", None)
    if args.layer and unit is None:
        raise ValueError("give --unit U with --layer for a text model (the unit whose activation is attributed)")
    target = args.classes[0] if getattr(args, "classes", None) else None
    att = attribute_tokens(model, source, args.layer, unit, target=target, n_steps=args.steps)
    path = Path(args.output)
    path.write_text(attribution_page(model.name, att, model.contract.kind), encoding="utf-8")
    print(f"{path}: integrated gradients of {att.what} over {len(att.tokens)} tokens "
          f"({time.perf_counter() - start:.1f}s)")
    return 0
