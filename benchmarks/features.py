"""Features beside neurons: dictionary quality by method, and how selective features are compared with neurons.

On EfficientNet-Lite0 ``blocks.10`` (112 channels, 14x14 positions) over the 160 demo photos (``demo_images(...,
skimage=True)``: crops and flips of 11 source photos, the two of scikit-learn and nine of scikit-image), every 5th
image held out:

1. **Quality by method**: held-out R², mean L0, dead fraction and training seconds of TopK (k = 8, 16), BatchTopK
   (k = 16) and NMF dictionaries of 256 features, beside PCA with 16 and 32 components (the linear baseline).
2. **Selectivity** (the measure): a unit's *top-9 source purity* is the share of its 9 best images (by its maximum
   over positions) that are crops of its most common source photo. Demo photo ``k`` is cut from source ``k % 11``,
   so the label is ground truth about what is in the picture and independent of the model. A unit that answers to
   one thing (a cat's fur, a rocket's gantry) draws its top images from one photo; a polysemantic unit mixes
   photos. Chance is what random directions of the same space get (the control row). Units whose top 9 are not all
   firing (dictionary features that fire on fewer than 9 images) are left out of the mean and counted.

    python benchmarks/features.py            # the tables in docs/features.md (a few CPU minutes)
    python benchmarks/features.py --quick    # TopK k = 16 only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from luminate import features, models
from luminate.atlas import demo_images
from luminate.data.store import ActivationStore
from luminate.features.learn import row_reader, split_rows
from luminate.units.examples import peaks

LAYER = "blocks.10"
SOURCES = 11
TOP = 9


def purity(peak: np.ndarray, source: np.ndarray, top: int = TOP) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (``peak`` ``[I, U]``): the share of its ``top`` best images from its most common source, and whether
    all ``top`` of them fire (value > 0)."""
    order = np.argsort(-peak, axis=0, kind="stable")[:top]                      # [top, U]
    shares, firing = [], []
    for u in range(peak.shape[1]):
        counts = np.bincount(source[order[:, u]], minlength=SOURCES)
        shares.append(counts.max() / top)
        firing.append(bool((peak[order[:, u], u] > 0).all()))
    return np.array(shares), np.array(firing)


def pca_r2(train: np.ndarray, held: np.ndarray, n: int) -> float:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n, random_state=0).fit(train)
    recon = pca.inverse_transform(pca.transform(held))
    return float(1 - ((held - recon) ** 2).sum() / ((held - held.mean(0)) ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--quick", action="store_true", help="TopK k = 16 only")
    parser.add_argument("--steps", type=int, default=3000, help="SAE training steps")
    args = parser.parse_args()
    model = models.load("efficientnet_lite0")
    work = Path(tempfile.mkdtemp(prefix="luminate-features-bench-"))
    folder = demo_images(work / "photos", args.images, skimage=True)
    runs = [("topk", 16)] if args.quick else [("topk", 16), ("topk", 8), ("batchtopk", 16), ("nmf", 0)]
    dictionaries = {}
    print("| method | k | held-out R² | L0 | dead | stability | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    store = None
    for method, k in runs:
        start = time.perf_counter()
        d = features.learn(model, store.path if store else folder, LAYER, 256, k, method, steps=args.steps,
                           out=work / f"{method}-{k}", stability_seed=1 if (method, k) == ("topk", 16) else None,
                           progress=False)
        seconds = time.perf_counter() - start
        store = store or ActivationStore(work / f"{method}-{k}" / "store")
        dictionaries[(method, k)] = d
        m = d.metrics
        stab = f"{m['stability']:.3f}" if "stability" in m else ""
        print(f"| {method} | {k or ''} | {m['r2']:.3f} | {m['l0']:.1f} | {100 * m['dead']:.1f}% | {stab} | "
              f"{seconds:.0f} |", flush=True)
    train_rows, held_rows = split_rows(store, 5)
    train = row_reader(store, LAYER, train_rows, 10 ** 9)(np.arange(len(train_rows))).numpy()
    held = row_reader(store, LAYER, held_rows, 10 ** 9)(np.arange(len(held_rows))).numpy()
    for n in (16, 32):
        print(f"| PCA | {n} components | {pca_r2(train, held, n):.3f} | {n} | | | |")

    # selectivity: every image's maximum per neuron, per feature, per random direction
    d = dictionaries[("topk", 16)]
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    source = np.array([int(p.stem[4:]) % SOURCES for p in paths])
    x = torch.cat([model.preprocess(p) for p in paths])
    from luminate.activations import activations

    acts = activations(model, x, LAYER)                                            # [I, 112, 14, 14]
    generator = torch.Generator().manual_seed(0)
    random_dirs = torch.randn(256, acts.shape[1], generator=generator)
    random_dirs = random_dirs / random_dirs.norm(dim=1, keepdim=True)
    centred = acts - d.tensors["b_dec"][None, :, None, None]
    rows = {"neurons (channels)": peaks(acts)[0],
            "TopK features (k = 16)": peaks(d.encode(acts))[0],
            "random directions (control)": peaks(torch.einsum("bchw,nc->bnhw", centred, random_dirs))[0]}
    if ("nmf", 0) in dictionaries:
        rows["NMF features"] = peaks(dictionaries[("nmf", 0)].encode(acts))[0]
    print(f"\n| units | count | top-{TOP} source purity (mean) | median | share >= 2/3 | left out (fire on < {TOP} "
          "images) |\n| --- | --- | --- | --- | --- | --- |")
    for name, peak in rows.items():
        share, firing = purity(peak.numpy(), source)
        kept = share[firing]
        print(f"| {name} | {len(share)} | {kept.mean():.3f} | {np.median(kept):.3f} | "
              f"{100 * (kept >= 2 / 3).mean():.0f}% | {int((~firing).sum())} |", flush=True)


if __name__ == "__main__":
    main()
