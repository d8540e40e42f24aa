"""Recompute MACO's natural-image magnitude prior, ``luminate/param/data/maco_magnitude.npz``.

The prior is the mean magnitude spectrum (in Luminate's raw, colour-decorrelated logit space) of random 256 x 256
crops of the colour photos that ship inside scikit-learn (``china.jpg``, ``flower.jpg``) and scikit-image
(``skimage.data``: astronaut, chelsea, coffee, rocket, ...), each taken at full size, half and quarter size. It is
deterministic (seed 0) and needs no network::

    pip install scikit-learn scikit-image
    python scripts/make_maco_prior.py            # writes luminate/param/data/maco_magnitude.npz (float16)

See :func:`luminate.param.maco.magnitude_from_images` for the measurement.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def photos() -> list[torch.Tensor]:
    """The bundled colour photos as ``[3, H, W]`` float tensors in [0, 1]."""
    import skimage.data
    import sklearn

    from luminate.images import load_image

    out = []
    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    for name in ("china.jpg", "flower.jpg"):
        out.append(load_image(folder / name)[0])
    for name in SKIMAGE_PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except Exception as exc:  # not bundled in this scikit-image version (would need a download)
            print(f"skipping skimage.data.{name}: {exc}", file=sys.stderr)
            continue
        if array.ndim == 3 and array.shape[2] >= 3:
            out.append(torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 255.0)
    return out


def main() -> int:
    from luminate.param.maco import PRIOR_PATH, PRIOR_SIZE, magnitude_from_images

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images = photos()
    magnitude = magnitude_from_images(images, size=PRIOR_SIZE, crops_per_image=12, scales=(1.0, 0.5, 0.25), seed=0)
    PRIOR_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PRIOR_PATH, magnitude=magnitude.numpy().astype(np.float16),
                        photos=np.array(len(images)), size=np.array(PRIOR_SIZE))
    print(f"{PRIOR_PATH}: magnitude {tuple(magnitude.shape)} from {len(images)} photos, "
          f"{PRIOR_PATH.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
