"""Comparing a hardware run with the golden model, in words that name what differs."""

from __future__ import annotations

import numpy as np

from .golden import GoldenModel, SPState

__all__ = ["golden_reference", "step_mismatches"]


def golden_reference(config, X, learn, initial: SPState | None = None):
    """The golden model's active maps (T, H, W) and final state for inputs X and learn flags."""
    model = GoldenModel(config)
    if initial is not None:
        model.set_state(initial)
    active = model.run(X, learn=learn)
    return active, model.state()


def step_mismatches(expected: np.ndarray, got: np.ndarray, limit: int = 10,
                    first_step: int = 0) -> list[str]:
    """Per-step, per-cell differences of active maps (T, H, W): 'step t: cell (i, j) active:
    golden 1, hardware 0'."""
    out = []
    if expected.shape != got.shape:
        return [f"shape: golden {expected.shape}, hardware {got.shape}"]
    for t, i, j in np.argwhere(expected != got)[:limit]:
        out.append(f"step {first_step + t}: cell ({i}, {j}) active: golden {int(expected[t, i, j])}, "
                   f"hardware {int(got[t, i, j])}")
    return out
