"""The data floor: inputs, the activation store, the one streaming pass and the settings values of a collection.

>>> images = luminate.data.image_set("photos/")            # a folder, paths, a Dataset or an image batch
>>> texts = luminate.data.read_texts("lines.txt")           # one text per line; empty / non-UTF-8 lines named
>>> store = luminate.data.ActivationStore("store/")         # sharded, resumable, read lazily

The atlas, the Microscope, features and the text Microscope build on it (docs/architecture.md, "The one pipeline").
"""

from luminate.data.inputs import (Batch, DatasetImages, ImageFolder, ImageList, ImageSet, PreparedImages, Texts,
                                  image_loader, image_set, read_texts, shard_batches)
from luminate.data.passes import BatchWork, stream
from luminate.data.settings import (CollectionSettings, LayerSpec, PassSettings, output_width, parse_units,
                                    resolve_layers)
from luminate.data.store import (ActivationStore, SiteInUseError, StoreDamagedError, StoreSettingsError, StoreWriter,
                                 file_lock, layer_key, site_lock)

__all__ = ["ActivationStore", "Batch", "BatchWork", "CollectionSettings", "DatasetImages", "ImageFolder", "ImageList",
           "ImageSet", "LayerSpec", "PassSettings", "PreparedImages", "SiteInUseError", "StoreDamagedError",
           "StoreSettingsError", "StoreWriter", "Texts", "file_lock", "image_loader", "image_set", "layer_key",
           "output_width", "parse_units", "read_texts", "resolve_layers", "shard_batches", "site_lock", "stream"]
