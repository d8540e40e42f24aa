"""Activation atlases: image sets, a sharded resumable activation store, layouts and binning.

>>> store = luminate.atlas.collect("efficientnet_lite0", "photos/", "blocks.10", "store/")
>>> acts = store.activations()                       # [N, 112]
>>> layout = luminate.atlas.atlas_layout(acts)       # [N, 2] in [0, 1]², UMAP / t-SNE / PCA
>>> cells = luminate.atlas.bin_layout(layout, acts, grid_size=20, min_count=10)
>>> atlas = luminate.atlas.activation_atlas(store)   # renders every cell; atlas.save_png("atlas.png")
"""

from luminate.atlas.collect import CollectSettings, UnreadableImagesWarning, collect, draw_positions
from luminate.atlas.layout import (Cell, ComparisonLayout, Layout, atlas_layout, bin_layout, class_filter,
                                   comparison_layout, embed, normalize_layout, whitening_matrix)
from luminate.data.inputs import DatasetImages, ImageFolder, ImageList, ImageSet, image_set
from luminate.data.store import ActivationStore, StoreSettingsError
from luminate.atlas.atlas import Atlas, AtlasCell, AtlasSettings, activation_atlas, class_atlas, compare_atlas, demo_images  # noqa: E402
from luminate.atlas.icons import render_icons  # noqa: E402

__all__ = ["ActivationStore", "Atlas", "AtlasCell", "AtlasSettings", "CollectSettings", "activation_atlas", "class_atlas", "compare_atlas",
           "demo_images", "render_icons", "Cell", "ComparisonLayout", "DatasetImages", "ImageFolder", "ImageList", "ImageSet",
           "Layout", "StoreSettingsError", "UnreadableImagesWarning", "atlas_layout", "bin_layout", "class_filter",
           "collect", "comparison_layout", "draw_positions", "embed", "image_set", "normalize_layout",
           "whitening_matrix"]
