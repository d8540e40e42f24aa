"""Lucent compatibility: port Lucent (``torch-lucent``) code by changing its imports.

>>> # from lucent.optvis import render, param, transform, objectives
>>> # from lucent.modelzoo import inceptionv1
>>> from luminate.lucent.optvis import render, param, transform, objectives
>>> from luminate.lucent.modelzoo import inceptionv1
>>> model = inceptionv1(pretrained=True).eval()           # weights from a local file (docs/lucent.md)
>>> images = render.render_vis(model, "mixed4a:476")     # a list of [B, H, W, 3] numpy arrays

Lucent's public names with Lucent's meanings, running on Luminate's render loop (:func:`luminate.render`): the
forward pass stops after the deepest layer the objective reads, weights are frozen for the call, BatchNorm is folded
into the convolutions, and no hook is left behind. A bare torchvision network is accepted as in Lucent: with
``preprocess=True`` its input is taken to be ImageNet-normalized (``(x - mean) / std`` with torchvision's
statistics), Lucent's InceptionV1 gets ``255 x - 117``. The deliberate differences are listed in docs/lucent.md.
"""

from luminate.lucent import misc, modelzoo, optvis, util

__all__ = ["misc", "modelzoo", "optvis", "util"]
