"""Binary encodings of small data sets that ship with installed packages (no downloads)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

__all__ = ["encode_intensity", "load_digits_binary"]


def encode_intensity(images: np.ndarray, input_shape: tuple[int, int], max_value: float) -> np.ndarray:
    """Encode grey images (N, h, w) as bit planes (N, Hin, Win), Hin = s*h, Win = s*w.

    Each pixel becomes an s x s block of bits, a thermometer code: bit k of the block (raster
    order) is set when the pixel exceeds (k + 0.5) * max_value / (s*s). Brighter pixels set
    more bits, so similar images share bits.
    """
    images = np.asarray(images, dtype=np.float64)
    n, h, w = images.shape
    hin, win = input_shape
    if hin % h or win % w or hin // h != win // w:
        raise ValueError(f"input_shape {input_shape} must be the {h}x{w} image scaled by one "
                         f"integer factor, e.g. ({2 * h}, {2 * w})")
    s = hin // h
    levels = (np.arange(s * s) + 0.5) * max_value / (s * s)
    bits = images[:, :, :, None] > levels  # (n, h, w, s*s)
    bits = bits.reshape(n, h, w, s, s).transpose(0, 1, 3, 2, 4)
    return bits.reshape(n, hin, win)


def load_digits_binary(input_shape: tuple[int, int] = (16, 16)):
    """scikit-learn's 8x8 `digits` (1,797 images, shipped with the package) as bit planes.

    Returns (X, y): X (1797, Hin, Win) bool, y (1797,) int labels 0-9.
    """

    digits = load_digits()
    return encode_intensity(digits.images, input_shape, 16.0), digits.target.astype(np.int64)
