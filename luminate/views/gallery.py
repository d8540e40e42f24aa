"""The feature-visualization gallery page: every experiment with its images and captions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from luminate.images import save_image
from luminate.views.html import esc, figure, page, write

if TYPE_CHECKING:  # types only: views import no computation
    from luminate.models.base import Model
    from luminate.recipes import Experiment


def gallery_html(model: Model, experiments: Sequence[Experiment]) -> str:
    sections = []
    for exp in experiments:
        figures = "".join(figure(exp.images[i:i + 1], caption, width=min(224, exp.images.shape[-1] * 2))
                          for i, caption in enumerate(exp.captions))
        settings = ""
        if exp.result is not None:
            s = exp.result.settings
            settings = (f'<p class="muted">objective <code>{esc(s["objective"])}</code>, {s["steps"]} steps, '
                        f'seed {s["seed"]}, {exp.result.seconds:.0f} s</p>')
        sections.append(f'<section class="card" id="{esc(exp.key)}"><h2>{esc(exp.title)}</h2>'
                        f"<p>{esc(exp.description)}</p>{settings}<div class=\"row\">{figures}</div></section>")
    subtitle = (f"Feature visualizations of <code>{esc(model.name)}</code> (input {esc(model.contract.describe())}): "
                "each image is optimized from noise (or from a photo) to excite a unit of the network.")
    return page(f"What {model.name} sees", "".join(sections), subtitle=subtitle)


def write_gallery(model: Model, experiments: Sequence[Experiment], folder: str | Path) -> Path:
    """Write ``index.html`` (self-contained) and one PNG per experiment into ``folder``."""
    folder = Path(folder)
    for exp in experiments:
        save_image(exp.images, folder / f"{exp.key}.png")
    return write(folder / "index.html", gallery_html(model, experiments))
