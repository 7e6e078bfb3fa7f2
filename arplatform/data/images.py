"""Image grids, and the one PNG encoder (for files, samples folders and inlined report images)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..core.io import atomic_write


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] → (B, H, W, C) uint8."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    return (images.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int = 8, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) in [0, 1] → one (rows·(H+pad), columns·(W+pad), C) uint8 picture."""
    tiles = to_uint8(images)
    b, h, w, c = tiles.shape
    columns = min(columns, b)
    rows = -(-b // columns)
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = tile
    return grid


def png_bytes(picture: np.ndarray) -> bytes:
    """An (H, W, C) or (H, W) uint8 array as PNG bytes."""
    picture = picture[..., 0] if picture.ndim == 3 and picture.shape[2] == 1 else picture
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path, picture: np.ndarray) -> str:
    """Write an (H, W, C) or (H, W) uint8 array as a PNG file, atomically."""
    data = png_bytes(picture)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)
