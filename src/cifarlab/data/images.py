"""Decoding image files of any format and mode into fixed-size RGB uint8 arrays (Pillow).

Used by ``cifarlab predict`` (and image folders). Policies for reaching the target size:

* ``center-crop`` (default): resize the shorter side to ``size`` (bicubic with Pillow's
  antialiasing), then crop the centre square, the usual evaluation transform (torchvision's
  ``Resize`` + ``CenterCrop``); CIFAR images are whole 32x32 frames, so a photo becomes one.
* ``pad``: resize the longer side to ``size`` and pad the rest with black (nothing cropped).

Images from strangers: the EXIF orientation is applied (a phone's portrait JPEG comes out upright,
as a viewer shows it); animated GIF/WebP/PNG give their first frame; the format is read from the
bytes, not the extension; an image over `MAX_PIXELS` (a decompression bomb: a small file that
claims 40 000 x 40 000 pixels) is refused from its header, before any pixel is decoded; and an
extreme aspect ratio is resized from its central region only, so no step holds more than one
decoded frame plus a ``size``-sided result.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
RESIZE_POLICIES = ("center-crop", "pad")
MAX_PIXELS = 12_000 * 12_000
"""Refused beyond 144 Mpixel (about 430 MB decoded): above the largest camera sensors (~100 Mpixel)
and Pillow's own bomb warning (89 Mpixel), far below a bomb's claim."""


class ImageDecodeError(ValueError):
    """One file could not be read as an image: ``path`` and ``reason`` (the message is both)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def to_rgb(img):
    """A Pillow image of any mode (1, L, LA, P, RGBA, CMYK, I;16, I, F...) as mode RGB.

    Transparency is composited onto black; 16-bit and 32-bit integer images are scaled to 8 bits by
    their range (Pillow's own ``convert`` would clip them); GIFs give their first frame.
    """
    from PIL import Image
    if getattr(img, "is_animated", False):
        img.seek(0)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def fit_size(img, size: int, policy: str = "center-crop"):
    """Resize an RGB Pillow image to ``size`` x ``size`` with ``policy`` (see module docstring)."""
    from PIL import Image
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose from {', '.join(RESIZE_POLICIES)}")
    w, h = img.size
    if policy == "center-crop":
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (nw - size) // 2, (nh - size) // 2
        if max(nw, nh) > 8 * size:  # a long strip: resample only the central square's source region
            box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
            return img.resize((size, size), Image.Resampling.BICUBIC, box=box)
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        return img.crop((left, top, left + size, top + size))
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (size, size))
    canvas.paste(img.resize((nw, nh), Image.Resampling.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
    return canvas


def load_image(path: str | os.PathLike, size: int = 32, policy: str = "center-crop") -> np.ndarray:
    """Decode ``path`` to uint8 (3, size, size) RGB.

    Raises:
        ImageDecodeError: not an image, truncated or corrupt, unreadable, or over `MAX_PIXELS`.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            img = Image.open(path)
        with img:
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ImageDecodeError(path, f"{img.size[0]}x{img.size[1]} pixels is over the "
                                       f"{MAX_PIXELS // 10**6} Mpixel limit (a decompression bomb?)")
            img.load()
            out = fit_size(to_rgb(ImageOps.exif_transpose(img)), size, policy)
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not an image Pillow can read") from None
    except PermissionError:
        raise ImageDecodeError(path, "permission denied") from None
    except Image.DecompressionBombError as e:  # Pillow's own check, at open, of a claim far past ours
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageDecodeError(path, f"claims {int(claimed.group(1)) // 10**6 if claimed else 'too many'} Mpixel, over "
                               f"the {MAX_PIXELS // 10**6} Mpixel limit (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageDecodeError):
            raise
        raise ImageDecodeError(path, f"corrupt or truncated image ({e})") from None
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


def expand_paths(paths) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named directly, plus image files found recursively in named folders (sorted).

    Returns (files, problems): problems are (path, reason) pairs, e.g. a missing path, rather than
    exceptions; files inside folders without an image extension are skipped silently, files named
    directly are always tried.
    """
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            files.append(p)
        else:
            problems.append((str(p), "no such file or folder"))
    return files, problems
