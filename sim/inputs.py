"""Validation of binary inputs, shared by every model and the host driver."""

from __future__ import annotations

import numpy as np

__all__ = ["check_binary", "flag_runs"]


def check_binary(x, shape: tuple[int, int], batch: bool, what: str = "input_shape") -> np.ndarray:
    """Validate binary input(s) of `shape` (with a leading batch axis if `batch`); return bool.

    Bool and integer arrays of 0/1 are accepted. Any other shape, a floating-point dtype or a
    value other than 0/1 is a ValueError that says what is wrong (`what` names where the expected
    shape comes from).
    """
    x = np.asarray(x)
    want = ((None,) if batch else ()) + tuple(shape)
    if x.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, x.shape)):
        shown = ("(T, %d, %d)" if batch else "(%d, %d)") % tuple(shape)
        raise ValueError(f"input has shape {x.shape}, expected {shown} ({what})")
    if x.dtype == bool:
        return x
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"input has dtype {x.dtype}; expected bool or an integer type holding "
                         f"0/1 (threshold or encode real-valued data first)")
    bad = (x != 0) & (x != 1)
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        where = (f"input {first[0]}, row {first[1]}, column {first[2]}" if batch
                 else f"row {first[0]}, column {first[1]}")
        raise ValueError(f"input is not binary: {int(bad.sum())} value(s) other than 0/1, "
                         f"the first {x[first].item()} at {where} (index {first})")
    return x.astype(bool)


def flag_runs(learn, t: int) -> list[tuple[int, int, bool]]:
    """`learn` (a bool, or one flag per input of T = `t`) as runs of equal flags, (start, stop,
    flag): a run's inputs learn one by one when the flag is set, and are inferred together as a
    batch when it is not. A `learn` of another length is a ValueError."""
    try:
        flags = np.broadcast_to(np.asarray(learn, dtype=bool), (t,))
    except ValueError:
        raise ValueError(f"learn must be a bool or {t} flags, got shape "
                         f"{np.shape(learn)}") from None
    runs = []
    start = 0
    while start < t:
        stop = start + 1
        while stop < t and flags[stop] == flags[start]:
            stop += 1
        runs.append((start, stop, bool(flags[start])))
        start = stop
    return runs
