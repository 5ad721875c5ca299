"""`cellsp bench golden`: speed of the golden model and of the classic software SP.

Figures: milliseconds per learning step (one input at a time, online) and inputs per second
without learning (batched), at 16x16 and 32x32 cells on a 32x32 input with radius 2. BLAS and
OpenMP are held to one thread, so the figures are for one core.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .config import SPConfig
from .golden import GoldenModel
from .software_sp import SoftwareSP

__all__ = ["bench_golden", "machine_info", "time_per_item"]


def machine_info() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(),
            "date": datetime.date.today().isoformat()}


def time_per_item(fn, items: int, min_seconds: float) -> tuple[float, float]:
    """(median, best) seconds per item of fn() (which processes `items`), over repeats that
    together last at least min_seconds (and at least 5 repeats). The median is the figure we
    quote; the best shows how much of the spread is the machine's noise."""
    fn()  # warm-up: first-call allocations and imports are not part of the figure
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) / items)
    return float(np.median(times)), min(times)


def bench_golden(cell_sides=(16, 32), learn_steps: int = 200, infer_inputs: int = 2048,
                 min_seconds: float = 1.0, include_software: bool = True, progress=None) -> dict:
    """Measure both models; return a JSON-ready dict of figures. `progress(line)` hears each
    model's figures as they are measured."""
    rng = np.random.default_rng(0)
    results = []
    with threadpool_limits(limits=1):
        for side in cell_sides:
            cfg = SPConfig(input_shape=(32, 32), cell_shape=(side, side), potential_radius=2)
            X = rng.random((max(learn_steps, infer_inputs), 32, 32)) < 0.2
            models = [("golden", lambda: GoldenModel(cfg))]
            if include_software:
                models.append(("software", lambda: SoftwareSP.from_config(cfg)))
            for name, make in models:
                model = make()
                model.run(X[:200], learn=True)  # leave the initial transient before timing
                learn_s, learn_best = time_per_item(
                    lambda: model.run(X[:learn_steps], learn=True), learn_steps, min_seconds)
                infer_s, infer_best = time_per_item(
                    lambda: model.run(X[:infer_inputs], learn=False), infer_inputs, min_seconds)
                row = {"model": name, "cells": f"{side}x{side}", "input": "32x32", "radius": 2,
                       "learn_step_ms": round(learn_s * 1e3, 4),
                       "learn_step_ms_best": round(learn_best * 1e3, 4),
                       "infer_inputs_per_s": round(1.0 / infer_s),
                       "infer_inputs_per_s_best": round(1.0 / infer_best)}
                results.append(row)
                if progress:
                    progress(f"  {name:9s} {row['cells']:>6s} cells: "
                             f"{row['learn_step_ms']:8.3f} ms per learning step, "
                             f"{row['infer_inputs_per_s']:>9,d} inputs/s without learning "
                             f"(medians; best {row['learn_step_ms_best']:.3f} ms, "
                             f"{row['infer_inputs_per_s_best']:,d}/s)")
    return {"benchmark": "golden", "threads": 1, "machine": machine_info(), "results": results,
            "targets": {"golden_learn_step_ms_32x32": 0.3, "golden_infer_inputs_per_s": 20000}}

