"""The feature-visualization gallery page: every experiment with its images, captions and objectives.

Each image's objective is shown in the command line's own syntax, so it pastes into
``luminate render MODEL 'OBJECTIVE'``. Sheets are laid out without empty cells.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from luminate.images import save_image
from luminate.models.base import Model
from luminate.views.html import esc, img_tag, page, write

if TYPE_CHECKING:  # views only draw: the recipes' results arrive as data
    from luminate.recipes import Experiment


def sheet_columns(n: int) -> int:
    """Columns for a sheet of ``n`` images with no empty cell: the smallest divisor of ``n`` that is at least
    ``sqrt(n)`` (3 -> one row of 3, 4 -> 2x2, 6 -> 3x2, 7 -> one row)."""
    n = max(1, int(n))
    return next(c for c in range(math.ceil(math.sqrt(n)), n + 1) if n % c == 0)


def _figure(image, caption: str, objective: str | None, width: int) -> str:
    code = f'<code class="objective" title="paste into luminate render">{esc(objective)}</code>' if objective else ""
    return (f"<figure>{img_tag(image, width, caption)}<figcaption>{esc(caption)}"
            f"{'<br>' + code if code else ''}</figcaption></figure>")


def gallery_html(model: Model, experiments: Sequence[Experiment]) -> str:
    sections = []
    for exp in experiments:
        objectives = list(exp.objectives) + [None] * (len(exp.captions) - len(exp.objectives))
        width = min(224, exp.images.shape[-1] * 2)
        figures = "".join(_figure(exp.images[i:i + 1], caption, objectives[i], width)
                          for i, caption in enumerate(exp.captions))
        settings = ""
        if exp.result is not None:
            s = exp.result.settings
            settings = (f'<p class="muted">{s.get("steps", "?")} steps, seed {s.get("seed", "?")}, '
                        f'{exp.result.seconds:.0f} s</p>')
        sections.append(f'<section class="card" id="{esc(exp.key)}"><h2>{esc(exp.title)}</h2>'
                        f"<p>{esc(exp.description)}</p>{settings}<div class=\"row\">{figures}</div></section>")
    subtitle = (f"Feature visualizations of <code>{esc(model.name)}</code> (input {esc(model.contract.describe())}): "
                "each image is optimized from noise (or from a photo) to excite a unit of the network. The code "
                f"under an image is its objective: <code>luminate render {esc(model.name)} 'OBJECTIVE'</code> "
                "renders it again.")
    return page(f"What {model.name} sees", "".join(sections), subtitle=subtitle)


def write_gallery(model: Model, experiments: Sequence[Experiment], folder: str | Path) -> Path:
    """Write ``index.html`` (self-contained) and one PNG sheet per experiment (no empty cells) into ``folder``."""
    folder = Path(folder)
    for exp in experiments:
        save_image(exp.images, folder / f"{exp.key}.png", ncol=sheet_columns(exp.images.shape[0]))
    return write(folder / "index.html", gallery_html(model, experiments))
