"""Comparing a hardware run with the golden model, in words that name what differs.

`compare_run` is the one reporter of such differences: `cellsp verify`, the cocotb test bench
and the HDL tests all word a mismatch through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .golden import GoldenModel, SPState

__all__ = ["golden_outputs", "MismatchReport", "compare_run", "state_difference_count"]


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


@dataclass
class MismatchReport:
    """How a hardware run differs from the golden model.

    count: every differing value (active bits, then state values); messages: a bounded list
    naming the first of them, such as 'step 4: cell (1, 2) active: golden 1, hardware 0' and
    'state after step 9: boost[0, 2]: 16 != 17' (golden value first). True when anything
    differs; `str()` is the whole report as one message.
    """

    count: int = 0
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.count > 0

    def __str__(self) -> str:
        if not self:
            return "hardware equals the golden model"
        more = self.count - len(self.messages)
        return ("hardware differs from the golden model:\n  " + "\n  ".join(self.messages)
                + (f"\n  ... and {more} more" if more > 0 else ""))


def compare_run(expected: np.ndarray, got: np.ndarray, expected_state: SPState | None = None,
                got_state: SPState | None = None, first_step: int = 0,
                limit: int = 10) -> MismatchReport:
    """Compare the golden model's active maps `expected` (T, H, W) with the hardware's `got`,
    step `first_step` being the first of them, and, when both are given, the golden model's
    state after the last step with the hardware's. At most `limit` messages for the steps and
    `limit` for the state; `count` counts every difference."""
    expected, got = np.asarray(expected), np.asarray(got)
    report = MismatchReport()
    if expected.shape != got.shape and not expected.size == got.size == 0:
        report.count += 1
        report.messages.append(f"shape: golden {expected.shape}, hardware {got.shape}")
    elif expected.size:
        where = np.argwhere(expected != got)
        report.count += len(where)
        report.messages += [f"step {first_step + t}: cell ({i}, {j}) active: golden "
                            f"{int(expected[t, i, j])}, hardware {int(got[t, i, j])}"
                            for t, i, j in where[:limit]]
    if expected_state is not None and got_state is not None:
        report.count += state_difference_count(expected_state, got_state)
        after = f"state after step {first_step + len(expected) - 1}" if len(expected) else "state"
        report.messages += [f"{after}: {d}"
                            for d in expected_state.differences(got_state, limit=limit)]
    return report


def state_difference_count(expected: SPState, got: SPState) -> int:
    """How many state values differ (a field of another shape counts once)."""
    count = 0
    for f in fields(expected):
        a, b = getattr(expected, f.name), getattr(got, f.name)
        count += 1 if a.shape != b.shape else int(np.count_nonzero(a != b))
    return count
