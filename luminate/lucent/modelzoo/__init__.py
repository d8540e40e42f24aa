"""Lucent's ``lucent.modelzoo``: :func:`inceptionv1` with Lucent's layer names, and ``util.get_model_layers``.

Lucent re-exported torchvision's models here; use ``torchvision.models`` directly (Luminate does not depend on
torchvision).
"""

from luminate.lucent.modelzoo import util
from luminate.lucent.modelzoo.inceptionv1 import InceptionV1, inceptionv1

__all__ = ["InceptionV1", "inceptionv1", "util"]
