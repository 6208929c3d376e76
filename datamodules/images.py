"""Image loading and Qwen's smart-resize rule (qwen-vl-utils 0.0.10 semantics, without torchvision).

Why our own: qwen-vl-utils 0.0.14 imports torchvision at import time. The rule (qwen-vl-utils `vision_process.py`, github.com/QwenLM/Qwen2.5-VL): round each side to
the nearest multiple of 28 (Qwen3-VL: 32, `factor`); if the area exceeds `max_pixels` scale down and floor, if below `min_pixels` scale up and
ceil; then a bicubic PIL resize. The HF image processor's own resize is then a no-op.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

ImageSource = str | Path | bytes | Image.Image  # a path, encoded bytes (parquet cells) or a decoded image

IMAGE_FACTOR = 28  # patch 14 x spatial merge 2
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
OFFICIAL_TRAIN_MAX_PIXELS = 802816  # DC-SFT training (MAX_PIXELS env var in the official scripts)
MAX_RATIO = 200


def _round_by(x: float, factor: int) -> int:
    return round(x / factor) * factor


def smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"a {width}x{height} image has an aspect ratio above {MAX_RATIO}, which Qwen2.5-VL cannot take; "
            "crop or pad it, or drop the record"
        )
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def num_image_tokens(
    height: int, width: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, factor: int = IMAGE_FACTOR
) -> int:
    """LLM tokens for an image of this size after smart resize (one token per factor x factor block: 28 for
    Qwen2.5-VL, 32 for Qwen3-VL)."""
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // factor) * (w // factor)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGBA/LA/P-with-transparency composited onto white; 16-bit and float greyscale rescaled to 8 bits (PIL's own
    convert clips them, turning most 16-bit pixels white); any other mode converted to RGB."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        else:  # I;16, I;16B, I;16L or I (16-bit PNGs decode as I or I;16)
            scale = 1.0 / 257.0 if values.max(initial=0.0) > 255 or image.mode.startswith("I;16") else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[3])
        return background
    return image.convert("RGB")


def image_size(path: str | Path, where: str = "") -> tuple[int, int]:
    """(height, width) from the file header, without decoding; a clear error if missing or unreadable."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{where}image not found: {path}. Check the path, or set the data's image_root to remap its prefix."
        ) from None
    except OSError as err:
        raise ValueError(f"{where}unreadable image {path}: {err}. Replace or remove the file.") from None
    return height, width


def open_rgb(source: ImageSource, where: str = "") -> Image.Image:
    """Decode a path / encoded bytes / PIL image into a fully loaded RGB image (transparency composited onto white,
    as qwen-vl-utils does); files are closed before returning, errors name the file."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if not isinstance(source, bytes):
        image_size(source, where)  # clear errors for missing / unreadable files first
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data: PIL fails only when decoding
        raise ValueError(f"{where}cannot decode {name}: {err}. Replace the file or remove the record.") from None


def verify_images(images: dict[str, str], progress_every: int = 2000) -> None:
    """Decode every image fully ({path: record}) before any training, so a truncated or corrupt file is named with
    its record now instead of crashing a run at its batch; one error lists every broken file."""
    broken = []
    for n, (path, where) in enumerate(images.items(), 1):
        try:
            open_rgb(path, f"{where}: ")
        except (ValueError, FileNotFoundError) as err:
            broken.append(str(err))
        if progress_every and n % progress_every == 0:
            print(f"[data] verified {n}/{len(images)} images", flush=True)
    if broken:
        shown = "\n  ".join(broken[:10])
        more = f"\n  ... and {len(broken) - 10} more" if len(broken) > 10 else ""
        raise ValueError(
            f"{len(broken)} of {len(images)} images cannot be decoded:\n  {shown}{more}\n"
            "(set data.verify_images false to skip this check)"
        )


def load_image(
    source: ImageSource,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    where: str = "",
    factor: int = IMAGE_FACTOR,
) -> Image.Image:
    """Open (path or bytes), convert to RGB and smart-resize an image to multiples of `factor`."""
    image = open_rgb(source, where)
    h, w = smart_resize(image.height, image.width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), resample=Image.BICUBIC)
    return image
