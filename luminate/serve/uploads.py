"""Uploaded images: checked before they are decoded, and kept in a bounded store (oldest evicted first).

An upload is refused, with the reason, when it is too large in bytes (:data:`MAX_UPLOAD_BYTES`), is not one of
the image formats in :data:`FORMATS`, or declares more pixels than :data:`MAX_PIXELS` in its header: Pillow reads
the header lazily, so the dimensions are known before any pixel is decoded and a decompression bomb (a small
file that inflates to gigabytes) is never decoded. Accepted images become the model's input
(:meth:`Model.preprocess`: evaluation crop and size, ``[1, C, H, W]`` in [0, 1]) and live in an
:class:`ImageStore`, bounded by count and by bytes.
"""

from __future__ import annotations

import difflib
import io
import re
import secrets
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from PIL import Image, UnidentifiedImageError

from luminate.images import ImageTooLargeError, UnreadableImageError, open_image

#: Largest accepted upload (bytes).
MAX_UPLOAD_BYTES = 20 << 20
#: Largest accepted image (pixels, width x height), checked from the file's header before decoding.
MAX_PIXELS = 50_000_000
#: The formats an upload may be in (Pillow names). Other decoders are never tried on uploaded bytes.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")


class UploadError(ValueError):
    """An upload that is refused: ``status`` is the HTTP status to answer (400, 413, or 503 when the server is busy
    decoding others: ``retry_after`` seconds), the message the reason."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


#: The short side a large upload is decoded down to at least (JPEG DCT scaling, else an integer ``reduce``), as
#: file reads are: every model's evaluation crop needs fewer pixels, and memory follows what is kept.
UPLOAD_MIN_SIDE = 1024
#: Uploads decoded at the same time; a further one waits up to :data:`DECODE_WAIT_S`, then is answered 503.
MAX_CONCURRENT_DECODES = 2
DECODE_WAIT_S = 20.0


class DecodeSlots:
    """A bound on uploads decoded at once (each may briefly hold its full-size pixels): ``with slots:`` waits up
    to ``wait_s`` seconds for a free slot, then refuses with :class:`UploadError` 503 and a Retry-After."""

    def __init__(self, slots: int = MAX_CONCURRENT_DECODES, wait_s: float = DECODE_WAIT_S):
        if slots < 1:
            raise ValueError(f"at least one upload must be able to decode, got slots={slots}")
        self.slots, self.wait_s = slots, wait_s
        self._semaphore = threading.BoundedSemaphore(slots)

    def __enter__(self) -> "DecodeSlots":
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise UploadError(503, f"the server is decoding {self.slots} uploads already; send this one again in a "
                                   "few seconds", retry_after=5)
        return self

    def __exit__(self, *exc) -> None:
        self._semaphore.release()


#: The server's decode bound (one per process: the memory it protects is the process's).
UPLOAD_DECODES = DecodeSlots()


def decode_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
                  min_side: int | None = UPLOAD_MIN_SIDE, slots: DecodeSlots | None = None) -> Image.Image:
    """The uploaded bytes as a decoded upright RGB PIL image, or :class:`UploadError` with the reason.

    The size in bytes and the dimensions declared in the header are checked before any pixel is decoded. The
    pixels are read by :func:`luminate.images.open_image`, the reader of files: an image over 16 megapixels is
    decoded at reduced size, its short side kept at ``min_side`` or more (``None``: full size). At most
    ``slots.slots`` uploads decode at once (default :data:`UPLOAD_DECODES`).
    """
    if len(data) > max_bytes:
        raise UploadError(413, f"the upload is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    if not data:
        raise UploadError(400, "the upload is empty (0 bytes); send an image file in the form field 'file'")
    try:
        with warnings.catch_warnings():   # the pixel limit below is this module's; Pillow's warning says nothing more
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(FORMATS))   # reads the header only
    except Image.DecompressionBombError as exc:   # Pillow's own limit, also read from the header
        found = re.search(r"(\d+) pixels", str(exc))
        declared = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "more than Pillow's limit"
        raise UploadError(413, f"the image declares {declared}; the limit is {max_pixels / 1e6:.0f} megapixels "
                               "(refused before decoding)") from None
    except UnidentifiedImageError:
        raise UploadError(400, f"the upload is not an image in a supported format ({', '.join(FORMATS)}); "
                               f"it starts with {data[:12]!r}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UploadError(400, f"the upload's image header cannot be read: {exc}") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise UploadError(400, f"the image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise UploadError(413, f"the image declares {width}x{height} = {width * height / 1e6:.0f} megapixels; the "
                               f"limit is {max_pixels / 1e6:.0f} megapixels (refused before decoding)")
    im.close()
    with slots or UPLOAD_DECODES:
        try:
            return open_image(data, min_side=min_side, max_pixels=max_pixels, formats=FORMATS)
        except ImageTooLargeError as exc:
            raise UploadError(413, str(exc)) from None
        except UnreadableImageError as exc:
            raise UploadError(400, f"the {im.format} image cannot be decoded: {exc.__cause__ or exc}") from None


@dataclass
class StoredImage:
    """One image of the store: ``pixels`` ``[1, C, H, W]`` in [0, 1] (the model's input) and the activations
    computed for it so far, by layer (CPU tensors, counted in the store's budget)."""

    pixels: torch.Tensor
    activations: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.pixels, *self.activations.values()])


class ImageStore:
    """Images by id, at most ``max_images`` of them and ``max_bytes`` in all (pixels plus cached activations);
    adding beyond either evicts the least recently used. Thread-safe.

    >>> store = ImageStore(max_images=64)
    >>> key = store.add(pixels)            # [1, 3, 224, 224]
    >>> store.get(key).pixels
    """

    def __init__(self, max_images: int = 64, max_bytes: int = 256 << 20, layers_per_image: int = 4):
        if max_images < 1 or max_bytes < 1:
            raise ValueError(f"the image store needs room for one image: max_images={max_images}, "
                             f"max_bytes={max_bytes}")
        self.max_images = max_images
        self.max_bytes = max_bytes
        self.layers_per_image = layers_per_image
        self._items: OrderedDict[str, StoredImage] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(item.nbytes for item in self._items.values())

    def add(self, pixels: torch.Tensor) -> str:
        """Store ``pixels`` ``[1, C, H, W]``; returns its new id."""
        item = StoredImage(pixels.detach().cpu())
        if item.nbytes > self.max_bytes:
            raise UploadError(413, f"the image needs {item.nbytes / 2**20:.1f} MB as model input; the store holds "
                                   f"{self.max_bytes / 2**20:.0f} MB")
        key = secrets.token_hex(6)
        with self._lock:
            self._items[key] = item
            self._evict()
        return key

    def get(self, key: str) -> StoredImage:
        """The image ``key`` (now the most recently used), or a KeyError naming the close ids."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                close = difflib.get_close_matches(key, list(self._items), n=3, cutoff=0.6)
                hint = f" Close ids: {', '.join(close)}." if close else ""
                raise KeyError(f"unknown image id {key!r}: upload it with POST /api/images (the server keeps the "
                               f"{self.max_images} most recent images).{hint}")
            self._items.move_to_end(key)
            return item

    def put_activation(self, key: str, layer: str, value: torch.Tensor) -> None:
        """Remember ``layer``'s activation of image ``key`` (the ``layers_per_image`` latest layers are kept)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:   # evicted meanwhile: nothing to keep
                return
            value = value.detach().cpu()
            if item.nbytes + value.numel() * value.element_size() > self.max_bytes:
                return   # would not fit beside its own image: computed again when asked
            item.activations.pop(layer, None)
            item.activations[layer] = value
            self._items.move_to_end(key)
            while len(item.activations) > self.layers_per_image:
                item.activations.pop(next(iter(item.activations)))
            self._evict()

    def _evict(self) -> None:
        total = sum(item.nbytes for item in self._items.values())
        while len(self._items) > 1 and (len(self._items) > self.max_images or total > self.max_bytes):
            _, old = self._items.popitem(last=False)
            total -= old.nbytes
