"""Lucid compatibility: port Lucid code by changing its imports.

>>> # import lucid.optvis.objectives as objectives, lucid.optvis.param as param, ...
>>> from luminate.lucid import objectives, param, render, transform
>>> model = luminate.models.load("inception_v1")            # Lucid's InceptionV1, Lucid's layer names accepted
>>> images = render.render_vis(model, "mixed4a_pre_relu:476")  # a list of [B, H, W, 3] numpy arrays

A thin shim over Luminate's one API, not a second implementation: ``objectives``, ``param`` and ``transform`` are
Luminate's own modules under Lucid's names (``transform.standard_transforms`` is a list, as in Lucid), and
:func:`render.render_vis` calls :func:`luminate.render` with Lucid's arguments and return value. InceptionV1 answers
to Lucid's layer names (``mixed4a_pre_relu`` is ``mixed4a.pre_relu``). Differences that remain are the documented
fixes of Lucid's quirks (docs/lucid.md): ``thresholds=(t,)`` records after ``t`` optimizer updates (Lucid: ``t + 1``).
See docs/byom.md for the migration path.
"""

from luminate.lucid import objectives, param, render, transform

__all__ = ["objectives", "param", "render", "transform"]
