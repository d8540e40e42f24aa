"""Features, not only neurons: sparse dictionaries of a layer's activations, shown like the Microscope's units.

>>> d = luminate.features.learn("efficientnet_lite0", "photos/", "blocks.10", n_features=256, k=16, out="dict")
>>> d.directions.shape, d.metrics["r2"]              # (256, 112), held-out explained variance
>>> codes = d.encode(luminate.activations(model, x, "blocks.10"))     # [B, 256, 14, 14]
>>> site = luminate.features.build(model, "photos/", "site/", "blocks.10")     # + views.features.write_site(site)
>>> luminate.features.top_examples("site", "blocks.10", 3)     # [{"image", "value", "y", "x", ...}], best first
>>> luminate.features.shown_images("site", "blocks.10", 3)     # [guided, unguided]: the feature page's images
"""

from luminate.features.dictionary import (Dictionary, DictionaryMismatchError, load_dictionary, match_directions,
                                          stability)
from luminate.features.learn import NonFiniteActivationsError, learn, metrics
from luminate.features.render import render_features
from luminate.features.sae import SparseAutoencoder, TrainSettings, train_sae
from luminate.features.site import FeatureSettings, FeatureSite, build, shown_images, shown_scores, top_examples

load = load_dictionary

__all__ = ["Dictionary", "DictionaryMismatchError", "FeatureSettings", "FeatureSite", "NonFiniteActivationsError",
           "SparseAutoencoder", "TrainSettings", "build", "learn", "load", "load_dictionary", "match_directions",
           "metrics", "render_features", "shown_images", "shown_scores", "stability", "top_examples", "train_sae"]
