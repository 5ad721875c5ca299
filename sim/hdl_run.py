"""What a simulation of the cell array is asked to do, and what comes back: shared by the
Amaranth and Verilator runners (and the host transports that drive the same streams)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .golden import SPState

__all__ = ["Operation", "StepResult", "Results", "input_beats"]


@dataclass
class Operation:
    """One thing to do to the array: kind is 'step', 'load', 'read', 'reset', or 'interrupt'
    (send the input x, wait `ticks` cycles, then reset: a reset in the middle of a step)."""
    kind: str
    x: np.ndarray | None = None
    learn: bool = False
    state: SPState | None = None
    ticks: int = 0


@dataclass
class StepResult:
    """The active map (H, W) of one step and its cycle count."""
    active: np.ndarray
    cycles: int


@dataclass
class Results:
    """What came out of a run: one StepResult per 'step', one SPState per 'read'."""
    steps: list[StepResult] = field(default_factory=list)
    states: list[SPState] = field(default_factory=list)
    failure: str | None = None
    #: clock cycle at which each step's last row was taken (Verilator runs)
    cycle_stamps: list[int] = field(default_factory=list)


def input_beats(geometry, x: np.ndarray) -> list[int]:
    """The input stream's `bits` payloads for one input, raster order, input_width a beat."""
    flat = np.asarray(x).reshape(-1).astype(np.uint64)
    w = geometry.input_width
    return [int(sum(int(flat[b * w + i]) << i for i in range(w)))
            for b in range(geometry.beats_per_input)]
