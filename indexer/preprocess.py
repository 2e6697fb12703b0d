"""Pure image → tensor functions, one per model family.

`clip_preprocess` reproduces open_clip's image transform for ``resize_mode`` "shortest"
(Resize(size, bicubic) on the shortest side → CenterCrop(size) → ToTensor → Normalize(mean, std))
and "squash" (resize both sides to size), with torchvision's rounding. The parameters come
from the model's ``visual/preprocess_cfg.json`` (open_clip's ``model.visual.preprocess_cfg``).
`wd14_preprocess` is the WD14 tagger's: pad to a square on white, resize, RGB → BGR, NHWC, 0–255.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # Pillow is imported where pixels are touched: the query process may never need it
    from PIL import Image  # late: the query text tower needs no Pillow (`pixdex search` stays without it)

RESAMPLING = ("bicubic", "bilinear", "nearest", "lanczos")  # PIL.Image.Resampling members, lower-cased
RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class ClipTransform:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> ClipTransform:
        size = cfg["size"]
        side = int(size[0] if isinstance(size, list | tuple) else size)
        if isinstance(size, list | tuple) and len(set(size)) != 1:
            raise ValueError(f"non-square input size {size} is not supported")
        transform = cls(side, tuple(cfg["mean"]), tuple(cfg["std"]),
                        cfg.get("interpolation", "bicubic"), cfg.get("resize_mode", "shortest"))
        if transform.interpolation not in RESAMPLING:
            raise ValueError(f"interpolation {transform.interpolation!r} is not one of {sorted(RESAMPLING)}")
        if transform.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {transform.resize_mode!r} is not one of {RESIZE_MODES}")
        return transform


def resize_shortest(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """torchvision Resize(int): the shortest side becomes `size`, the other is truncated."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if w <= h else (new_long, size)
    return image.resize(new_size, resample=resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision CenterCrop for an image at least `size` on both sides."""
    w, h = image.size
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def normalize(pixels: NDArray[np.uint8], mean: tuple[float, ...], std: tuple[float, ...]) -> NDArray[np.float32]:
    scaled = np.divide(pixels, np.float32(255.0), dtype=np.float32)
    centered = np.subtract(scaled, np.array(mean, dtype=np.float32), dtype=np.float32)
    normalized: NDArray[np.float32] = np.divide(centered, np.array(std, dtype=np.float32), dtype=np.float32)
    return normalized


def clip_preprocess(image: Image.Image, t: ClipTransform) -> NDArray[np.float32]:
    """An RGB image → a (3, size, size) float32 array, as open_clip's transform makes it."""
    from PIL import Image  # late: the query text tower needs no Pillow (`pixdex search` stays without it)

    resample = Image.Resampling[t.interpolation.upper()]
    if t.resize_mode == "squash":
        image = image.resize((t.size, t.size), resample=resample)
    else:
        image = center_crop(resize_shortest(image, t.size, resample), t.size)
    chw = normalize(np.asarray(image, dtype=np.uint8), t.mean, t.std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw)


def pad_square(image: Image.Image, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    from PIL import Image  # late: the query text tower needs no Pillow (`pixdex search` stays without it)

    w, h = image.size
    side = max(w, h)
    if w == h:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def wd14_preprocess(image: Image.Image, size: int) -> NDArray[np.float32]:
    """An RGB image → a (size, size, 3) float32 BGR array in 0–255, as WD14 taggers expect."""
    from PIL import Image  # late: the query text tower needs no Pillow (`pixdex search` stays without it)

    square = pad_square(image)
    if square.size != (size, size):
        square = square.resize((size, size), resample=Image.Resampling.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])
