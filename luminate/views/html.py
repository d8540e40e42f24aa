"""The shared skeleton of every Luminate HTML page: one file, inline CSS, JS and images, no network.

The CSS and JavaScript of the pages live as files in ``luminate/views/assets/`` (read with :func:`asset`) and are
inlined into each page.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from luminate.images import ImageLike, data_url

_ASSETS = resources.files("luminate.views").joinpath("assets")


def asset(name: str) -> str:
    """The text of a page asset shipped with Luminate (``luminate/views/assets/<name>``: CSS and JavaScript)."""
    return _ASSETS.joinpath(name).read_text(encoding="utf-8")


#: The CSS every page starts with (``assets/base.css``).
BASE_CSS = asset("base.css")


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def img_tag(image: ImageLike, width: int | None = None, alt: str = "", fmt: str = "png", cls: str = "",
            pixelated: bool = False, attrs: str = "") -> str:
    """An ``<img>`` whose source is an inline data URL."""
    style = "image-rendering: pixelated;" if pixelated else ""
    size = f' width="{width}"' if width else ""
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{data_url(image, fmt)}"{size}{klass} alt="{esc(alt)}" style="{style}" {attrs}>'


def figure(image: ImageLike, caption: str, width: int | None = None, fmt: str = "png") -> str:
    return f"<figure>{img_tag(image, width, caption, fmt)}<figcaption>{esc(caption)}</figcaption></figure>"


def json_script(name: str, data: Any) -> str:
    """Data for the page's script, as a JSON block that cannot close its own tag."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(name)}">{payload}</script>'


def page(title: str, body: str, css: str = "", script: str = "", subtitle: str = "") -> str:
    """A complete HTML document."""
    lede = f'<p class="lede">{subtitle}</p>' if subtitle else ""
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{BASE_CSS}{css}</style></head>"
            f"<body><h1>{esc(title)}</h1>{lede}{body}"
            f"<footer>Made with Luminate. This page is self-contained: it loads nothing from the network.</footer>"
            f"{js}</body></html>")


def write(path: str | Path, document: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


class HTMLView:
    """A page that displays itself in a notebook (``_repr_html_``) and saves with :meth:`save`."""

    def __init__(self, document: str, title: str = ""):
        self.document = document
        self.title = title

    def save(self, path: str | Path) -> Path:
        return write(path, self.document)

    def _repr_html_(self) -> str:
        # Notebooks sandbox full documents poorly; an iframe keeps the page's own CSS and scripts intact.
        return (f'<iframe srcdoc="{esc(self.document)}" style="width:100%;height:720px;border:1px solid #ddd">'
                f"</iframe>")

    def __repr__(self) -> str:
        return f"HTMLView({self.title!r}, {len(self.document) // 1024} KiB)"
