"""The counter-based random numbers that SPEC.md uses for pools and initial permanences.

SplitMix64's finaliser applied to a key: a pure function of (seed, stream, cell, slot), so
any implementation (NumPy here, C or a host in another language) draws the same numbers in
any order. All arithmetic is modulo 2**64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mix64", "draw", "STREAM_POOL", "STREAM_PERM"]

MASK64 = (1 << 64) - 1
STREAM_POOL = 1
STREAM_PERM = 2

_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def mix64(z):
    """SplitMix64 step: z += gamma, then two xor-shift-multiply rounds. Python int or uint64 array."""
    if isinstance(z, np.ndarray):
        z = z.astype(np.uint64, copy=True)
        z += np.uint64(_GAMMA)
        z ^= z >> np.uint64(30)
        z *= np.uint64(_M1)
        z ^= z >> np.uint64(27)
        z *= np.uint64(_M2)
        z ^= z >> np.uint64(31)
        return z
    z = (int(z) + _GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def draw(seed: int, stream: int, cell: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """64-bit draws mix64(mix64(mix64(seed) ^ stream) ^ (cell * 2**16 + slot)), broadcast."""
    base = mix64(mix64(seed) ^ stream)
    key = (np.asarray(cell, dtype=np.uint64) << np.uint64(16)) | np.asarray(slot, dtype=np.uint64)
    return mix64(np.asarray(key, dtype=np.uint64) ^ np.uint64(base))
