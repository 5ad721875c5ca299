"""Comparing a hardware run with the golden model, in words that name what differs."""

from __future__ import annotations

import numpy as np

from .golden import GoldenModel

__all__ = ["golden_outputs", "step_mismatches"]


def golden_outputs(config, operations):
    """The golden model's active maps (T, H, W) for the 'step' operations of a run (see
    `cellsp.host.array_run.Operation`), following its state loads, and its final state."""
    model = GoldenModel(config)
    out = []
    for op in operations:
        if op.kind == "load":
            model.set_state(op.state)
        elif op.kind == "step":
            out.append(model.step(op.x, learn=op.learn))
        elif op.kind in ("reset", "interrupt"):
            raise ValueError("golden_outputs does not model resets; compare after a reload")
    return np.array(out), model.state()


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
