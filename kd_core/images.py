"""A user's own image (a drawing or an upload) prepared the way a dataset's images were.

MNIST's preprocessing (LeCun, Cortes & Burges): each scanned digit was size-normalised so
that its bounding box fits a 20x20 pixel box *keeping its aspect ratio*, the resampling
being anti-aliased (so the strokes get grey edges), and was then placed in a 28x28 frame so
that its *centre of mass* sits at the frame's centre. Digits are white (high values) on a
black (zero) background. The models then see ``(pixel / 255 - mean) / std`` with the
training split's mean and std (:func:`kd_core.data.normalise_images`).

:func:`mnist_style` repeats those steps on any greyscale array; :func:`to_model_input`
picks the right recipe for each dataset:

* ``mnist``, ``mnist-mini``: :func:`mnist_style` (20x20 box, 28x28 frame, centre of mass).
* ``fashion-mnist``: the object's bounding box scaled to fill the 28x28 frame (Fashion-MNIST
  trims each product photo and resizes its longer edge to 28), centred by its box.
* ``digits`` (scikit-learn's 8x8 digits, from UCI "optdigits"): the digit's bounding box
  scaled to fill a 32x32 bitmap, which is cut into 4x4 blocks whose ink is counted, giving
  8x8 values 0..16; the dataset divides by 16 before normalising.
* ``cifar10``: colour photos, centre-cropped to a square and resized to 32x32 RGB.

Uploads are checked by :func:`check_upload` (size, format, decodable, not a pixel bomb);
every problem a user can cause raises :class:`~kd_core.errors.KDError` with one clear line.
No Streamlit here: the app and the tests share these functions.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from .data import normalise_images
from .errors import KDError

MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # 2 MB
MAX_PIXELS = 4096 * 4096  # a bigger picture is refused (and cannot be a decompression bomb)
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}  # PIL name -> shown name
EXTENSIONS = ["png", "jpg", "jpeg", "gif", "bmp", "webp"]  # for the upload widget
INK = 0.1  # a pixel darker than 10% of the brightest is background when finding the digit's box


class ImageError(KDError, ValueError):
    """An uploaded or drawn image cannot be used. ``code`` names the problem and ``params``
    its numbers, so an app can word the message in its own language."""

    def __init__(self, message: str, code: str = "invalid", **params):
        super().__init__(message)
        self.code, self.params = code, params


# ------------------------------------------------------------------ checking uploads
def check_upload(content: bytes, name: str = "image") -> Image.Image:
    """The decoded image of an upload, or :class:`ImageError` saying why it is refused:
    empty, over :data:`MAX_UPLOAD_BYTES`, not an image, a format other than PNG, JPEG, GIF,
    BMP or WebP, truncated or corrupt, or more than :data:`MAX_PIXELS` pixels."""
    size = len(content or b"")
    if size == 0:
        raise ImageError(f"{name} is empty (0 bytes).", "empty_file", name=name)
    if size > MAX_UPLOAD_BYTES:
        mb, limit = size / 1024 / 1024, MAX_UPLOAD_BYTES // 1024 // 1024
        raise ImageError(f"{name} is {mb:.1f} MB; the limit is {limit} MB.", "too_large", name=name, mb=mb, limit=limit)
    allowed = ", ".join(FORMATS.values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(content))
            fmt = probe.format
            w, h = probe.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(
            f"{name} has too many pixels; at most {MAX_PIXELS:,} are allowed.",
            "too_many_pixels",
            name=name,
            limit=MAX_PIXELS,
        ) from None
    except Exception:
        raise ImageError(
            f"{name} is not an image that can be read; use {allowed}.", "not_image", name=name, formats=allowed
        ) from None
    if fmt not in FORMATS:
        raise ImageError(
            f"{name} is a {fmt or 'unknown'} image; use {allowed}.",
            "format",
            name=name,
            format=fmt or "unknown",
            formats=allowed,
        )
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"{name} is {w}×{h} pixels; at most {MAX_PIXELS:,} pixels are allowed.",
            "too_many_pixels",
            name=name,
            limit=MAX_PIXELS,
        )
    try:
        image = Image.open(io.BytesIO(content))
        image.load()  # decodes every pixel: a truncated or corrupt file fails here
    except Exception:
        raise ImageError(
            f"{name} is damaged or truncated: its {FORMATS[fmt]} data cannot be decoded.",
            "damaged",
            name=name,
            format=FORMATS[fmt],
        ) from None
    return image


def from_data_url(url: str) -> bytes:
    """The bytes of a ``data:image/png;base64,...`` URL (what the drawing canvas sends)."""
    head, sep, body = (url or "").partition(",")
    if not sep or not head.startswith("data:image/") or ";base64" not in head:
        raise ImageError("The drawing could not be read (not a base64 image data URL).", "bad_drawing")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("The drawing could not be read (bad base64 data).", "bad_drawing") from None


# ------------------------------------------------------------------ to greyscale, white on black
def to_grey(image, invert: bool | None = None) -> np.ndarray:
    """A float array in [0, 1], white ink on black, from a PIL image or an array
    ((H, W), (H, W, 3) or (H, W, 4), uint8 0..255 or floats 0..1).

    A transparent picture is first laid on paper that contrasts with its opaque pixels (its
    ink), so black ink on a transparent background works too. ``invert=None`` guesses: a picture whose border
    is mostly bright (dark ink on white paper) is inverted; ``True``/``False`` force it.
    """
    if isinstance(image, Image.Image):
        im = ImageOps.exif_transpose(image) if hasattr(image, "getexif") else image
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
            grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
            alpha = rgba[..., 3]
            return _white_on_black(grey, alpha, invert)
        return _white_on_black(np.asarray(im.convert("L"), dtype=np.float64) / 255.0, None, invert)
    a = np.asarray(image)
    if a.dtype == np.bool_:
        a = a.astype(np.float64)
    elif a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    else:
        a = a.astype(np.float64)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        alpha = a[..., 3] if a.shape[-1] == 4 else None
        return _white_on_black(a[..., :3] @ np.array([0.299, 0.587, 0.114]), alpha, invert)
    if a.ndim != 2:
        raise ImageError(f"An image must be (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}.")
    return _white_on_black(a, None, invert)


def _white_on_black(grey: np.ndarray, alpha: np.ndarray | None, invert: bool | None) -> np.ndarray:
    grey = np.clip(np.nan_to_num(grey), 0.0, 1.0)
    if alpha is not None and alpha.min() < 1.0:
        # transparency: lay the picture on paper that contrasts with its opaque (ink) pixels
        opaque = alpha > 0.5
        paper = 1.0 if opaque.any() and float(np.median(grey[opaque])) < 0.5 else 0.0
        grey = grey * alpha + paper * (1.0 - alpha)
    if invert is None:
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        invert = float(np.median(border)) > 0.5
    return 1.0 - grey if invert else grey


# ------------------------------------------------------------------ MNIST-style normalisation
def ink_box(grey: np.ndarray, threshold: float = INK) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive ends, of the pixels brighter than ``threshold``
    times the brightest; :class:`ImageError` when there is no ink at all (an empty canvas)."""
    g = np.asarray(grey, dtype=np.float64)
    peak = float(g.max()) if g.size else 0.0
    if peak < 0.05:
        raise ImageError("The image is empty: there is no digit in it (draw or upload one first).", "no_ink")
    rows, cols = np.flatnonzero((g > threshold * peak).any(1)), np.flatnonzero((g > threshold * peak).any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """``crop`` resized with anti-aliasing so its longer side is ``box``, aspect ratio kept."""
    h, w = crop.shape
    s = box / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    im = Image.fromarray(np.clip(crop, 0, 1).astype(np.float32), mode="F")
    return np.clip(np.asarray(im.resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float64), 0.0, 1.0)


def centre_of_mass(grey: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre of ``grey``."""
    g = np.asarray(grey, dtype=np.float64)
    total = g.sum()
    if total <= 0:
        return (g.shape[0] - 1) / 2, (g.shape[1] - 1) / 2
    r, c = np.indices(g.shape)
    return float((r * g).sum() / total), float((c * g).sum() / total)


def _place(small: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    """``small`` pasted into a black ``size``x``size`` frame at (top, left), clipped at the edges."""
    out = np.zeros((size, size), dtype=np.float64)
    h, w = small.shape
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(size, top + h), min(size, left + w)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = small[r0 - top : r1 - top, c0 - left : c1 - left]
    return out


def mnist_style(image, size: int = 28, box: int = 20, invert: bool | None = None) -> np.ndarray:
    """MNIST's preprocessing: the digit's bounding box scaled (anti-aliased, aspect ratio kept)
    to fit a ``box`` x ``box`` square, then placed in a black ``size`` x ``size`` frame with its
    centre of mass at the frame's centre. Returns float32 (size, size) pixels in [0, 1],
    white digit on black. :class:`ImageError` if there is no digit (an empty image)."""
    grey = to_grey(image, invert)
    t, b, l, r = ink_box(grey)
    small = _fit(grey[t:b, l:r], box)
    cy, cx = centre_of_mass(small)
    centre = (size - 1) / 2
    return _place(small, size, round(centre - cy), round(centre - cx)).astype(np.float32)


def fill_frame(image, size: int = 28, invert: bool | None = None) -> np.ndarray:
    """The object's bounding box scaled to fill a ``size`` x ``size`` frame (aspect ratio kept),
    centred by its box: Fashion-MNIST's recipe. float32 (size, size) in [0, 1]."""
    grey = to_grey(image, invert)
    t, b, l, r = ink_box(grey)
    small = _fit(grey[t:b, l:r], size)
    h, w = small.shape
    return _place(small, size, (size - h) // 2, (size - w) // 2).astype(np.float32)


def digits_style(image, invert: bool | None = None) -> np.ndarray:
    """scikit-learn's 8x8 digits (UCI optdigits): the digit's bounding box scaled to fill a
    32x32 binary bitmap, counted in non-overlapping 4x4 blocks: 8x8 integers 0..16.
    Returned as float32 counts / 16, i.e. pixels in [0, 1] like ``data.load("digits")`` uses."""
    bitmap = fill_frame(image, 32, invert) > 0.5
    counts = bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3))
    return (counts / 16.0).astype(np.float32)


def photo_style(image, size: int = 32) -> np.ndarray:
    """CIFAR-10's format: an RGB photo, centre-cropped to a square and resized (anti-aliased)
    to ``size`` x ``size``. float32 (3, size, size) in [0, 1]. A greyscale picture is repeated
    on the three channels."""
    if isinstance(image, Image.Image):
        im = ImageOps.exif_transpose(image).convert("RGB")
    else:
        a = np.asarray(image)
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise ImageError(f"A colour image must be (H, W, 3) or (H, W, 4); got shape {a.shape}.")
        im = Image.fromarray(a[..., :3])
    im = ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)
    return (np.asarray(im, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


# ------------------------------------------------------------------ per dataset
RECIPES = {"mnist": "mnist", "mnist-mini": "mnist", "fashion-mnist": "fashion", "digits": "digits", "cifar10": "photo"}


def pixels(image, dataset_name: str, invert: bool | None = None) -> np.ndarray:
    """``image`` prepared like ``dataset_name``'s images: float32 (C, H, W) pixels in [0, 1]
    (before the dataset's mean/std normalisation)."""
    recipe = RECIPES.get(dataset_name)
    if recipe == "mnist":
        return mnist_style(image, invert=invert)[None]
    if recipe == "fashion":
        return fill_frame(image, 28, invert)[None]
    if recipe == "digits":
        return digits_style(image, invert)[None]
    if recipe == "photo":
        return photo_style(image)
    raise ImageError(
        f"Own images are not supported for the dataset {dataset_name!r}; use one of {', '.join(RECIPES)}.",
        "unsupported",
        dataset=dataset_name,
    )


def to_model_input(image, dataset, invert: bool | None = None) -> torch.Tensor:
    """A float32 ``(1, C, H, W)`` batch of one image, prepared like ``dataset``'s images
    (:func:`pixels`) and normalised with its mean/std, ready for the dataset's models.
    ``dataset`` is a :class:`kd_core.data.Dataset`."""
    x = torch.from_numpy(pixels(image, dataset.name, invert))
    if tuple(x.shape) != tuple(dataset.in_shape):
        raise ImageError(f"Prepared image has shape {tuple(x.shape)}, but {dataset.name} needs {dataset.in_shape}.")
    return normalise_images(x[None], dataset)
