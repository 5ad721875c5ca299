"""`cellsp bench torch`: the SP as a PyTorch layer (TorchSP) beside the golden model, the classic
software SP and each board's array.

Figures, on the golden bench's config (32x32 input, radius 2, `--cells` per side): (a) one SP
learning online, ms a step; (b) 1, 16, 256 and 4,096 SPs in lockstep, each on its own stream of
inputs, total learning inputs per second; (c) batched inference, inputs per second; and what
the 3x3 exchange (inhibition, the boost target's sum, the weak test's maximum) costs a step and
an input. The golden model and the software SP run on one thread (as `cellsp bench golden`);
torch on `threads` intra-op threads. The golden model's learning step is timed again after
the TorchSP rows, and every ratio to it (`over_golden`, the targets) is against the mean of its
two timings, with the load average before and after in the JSON: on a shared machine the load
moves within a run. Each board's array: cycles per input at its clock, the exchange's cycles,
and the inputs per second its UART carries.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from cellsp.boards.boards import BOARDS
from cellsp.boards.fit import cycles_per_input, uart_inputs_per_s
from cellsp.sim import GoldenModel, SPConfig, SoftwareSP
from cellsp.sim.bench import machine_info
from cellsp.sim.torch_sp import TorchSP

from .files import UsageError

__all__ = ["bench_torch", "bench_config", "board_rows", "check_device", "target_lines",
           "table_lines", "TARGETS"]

#: the issue's targets: 4,096 lockstep SPs learn at least 10x the golden model's single-SP
#: inputs/s; one TorchSP's learning step takes at most 2x the golden model's
TARGETS = {"lockstep_4096_over_golden": 10.0, "single_step_over_golden": 2.0}


def check_device(device: str) -> str:
    """`device` if torch can compute there; else a UsageError saying what to do."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r} is not a torch device ({exc}); use cpu or "
                         f"cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA "
                         f"device; run on a machine with a GPU and a CUDA build of torch, or "
                         f"use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: only cpu and cuda are measured")
    return device


def target_lines(data: dict) -> list[str]:
    """One line per target: the figure, the target, met or missed."""
    return [f"target {name}: {t['value']} (target {t['target']}): "
            f"{'met' if t['met'] else 'missed'}" for name, t in data["targets"].items()]


def bench_config(cells: int) -> SPConfig:
    """The golden bench's config: 32x32 input, radius 2 (25-slot windows), cells x cells."""
    return SPConfig(input_shape=(32, 32), cell_shape=(cells, cells), potential_radius=2)


class _Timer:
    """Seconds of work on `device`, waiting for a GPU's queue before reading the clock."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _timed_steps(fn, count: int, min_seconds: float, timer: _Timer) -> tuple[float, int]:
    """(seconds per call, calls) of fn(k), k = 1, 2, ..., after one warm-up call (k = 0):
    at least `count` calls, and more until min_seconds have passed."""
    fn(0)
    start = timer.now()
    k = 1
    while k <= count or timer.now() - start < min_seconds:
        fn(k)
        k += 1
    return (timer.now() - start) / (k - 1), k - 1


def _random_inputs(cfg: SPConfig, shape: tuple, seed: int, device) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.rand(shape + tuple(cfg.input_shape), generator=gen) < 0.2).to(device)


def _exchange_seconds(sp: TorchSP, timer: _Timer, repeats: int = 5) -> float:
    """Seconds a step spends in the 3x3 exchange (`TorchSP.exchange`)."""
    sp.exchange()
    start = timer.now()
    for _ in range(repeats):
        sp.exchange()
    return (timer.now() - start) / repeats


def _golden_learn_step_ms(cfg: SPConfig, min_seconds: float, learn_steps: int) -> float:
    """The golden model's learning step in ms, one thread, timed again (as in
    _reference_rows) after the TorchSP rows: the load on a shared machine moves."""
    rng = np.random.default_rng(0)
    X = rng.random((max(learn_steps, 50),) + tuple(cfg.input_shape)) < 0.2
    with threadpool_limits(limits=1):
        model = GoldenModel(cfg)
        model.run(X[:50], learn=True)
        learn_s, _ = _timed_steps(lambda k: model.run(X[:learn_steps], learn=True), 1,
                                  min_seconds, _Timer(torch.device("cpu")))
    return learn_s / learn_steps * 1e3


def _reference_rows(cfg: SPConfig, min_seconds: float, learn_steps: int, infer_inputs: int,
                    progress) -> list[dict]:
    """The golden model and the software SP, one thread, as `cellsp bench golden` times them."""
    rng = np.random.default_rng(0)
    X = rng.random((max(learn_steps, infer_inputs, 50),) + tuple(cfg.input_shape)) < 0.2
    rows = []
    with threadpool_limits(limits=1):
        for name, make in (("golden model", lambda: GoldenModel(cfg)),
                           ("software SP", lambda: SoftwareSP.from_config(cfg))):
            model = make()
            model.run(X[:50], learn=True)           # past the first transient
            timer = _Timer(torch.device("cpu"))
            learn_s, _ = _timed_steps(lambda k: model.run(X[:learn_steps], learn=True), 1,
                                      min_seconds, timer)
            infer_s, _ = _timed_steps(lambda k: model.run(X[:infer_inputs], learn=False), 1,
                                      min_seconds, timer)
            row = {"model": name, "threads": 1, "instances": 1,
                   "learn_step_ms": round(learn_s / learn_steps * 1e3, 4),
                   "learn_inputs_per_s": round(learn_steps / learn_s),
                   "infer_inputs_per_s": round(infer_inputs / infer_s)}
            rows.append(row)
            if progress:
                progress(f"  {name:12s}: {row['learn_step_ms']:.3f} ms a learning step "
                         f"({row['learn_inputs_per_s']:,d} inputs/s), "
                         f"{row['infer_inputs_per_s']:,d} inputs/s without learning")
    return rows


def board_rows() -> list[dict]:
    """Each board's default array: cycles per input at its clock, the exchange's share (P
    cycles of inhibition, P of duty cycles when learning, per PE, all PEs at once), and what
    its UART carries."""
    rows = []
    for board in BOARDS.values():
        cfg, p = board.default_config, board.default_cells_per_pe
        geometry = board.geometry(cfg, p)
        learn, infer = cycles_per_input(geometry, True), cycles_per_input(geometry, False)
        uart = uart_inputs_per_s(geometry, board.baud)
        rows.append({"board": board.name, "cells": f"{cfg.cell_shape[0]}x{cfg.cell_shape[1]}",
                     "cells_per_pe": p, "clock_hz": board.clock_hz,
                     "learn_cycles": learn, "infer_cycles": infer,
                     "learn_inputs_per_s": round(board.clock_hz / learn),
                     "infer_inputs_per_s": round(board.clock_hz / infer),
                     "exchange_cycles_learning": 2 * p,
                     "exchange_us_per_input": round(2 * p / board.clock_hz * 1e6, 3),
                     "uart_baud": board.baud,
                     "uart_inputs_per_s_pipelined": uart["pipelined"],
                     "uart_step_bytes": [uart["step_request_bytes"], uart["step_reply_bytes"]]})
    return rows


def bench_torch(cells: int = 32, instances=(1, 16, 256, 4096), device: str = "cpu",
                threads: int | None = None, min_seconds: float = 2.0, learn_steps: int = 100,
                infer_inputs: int = 2048, compile: bool = False, progress=None) -> dict:
    """Measure TorchSP beside the golden model, the software SP and the boards; return a
    JSON-ready dict (with `table`, markdown lines). `compile`: the lockstep rows learn through
    `TorchSP(..., compile=True)`, and the first step's seconds (the compilation) are
    recorded as `first_step_s`. `progress(line)` hears each figure."""
    dev = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    cfg = bench_config(cells)
    timer = _Timer(dev)
    say = progress or (lambda line: None)
    say(f"config: {cells}x{cells} cells, 32x32 input, radius 2; torch {torch.__version__} on "
        f"{dev}, {threads} thread(s); golden model and software SP on one thread; load "
        f"average {os.getloadavg()[0]:.1f}")
    load = [round(os.getloadavg()[0], 2)]
    reference = _reference_rows(cfg, min_seconds, learn_steps, infer_inputs, say)
    golden = reference[0]

    rows = []
    for count in instances:
        start = time.perf_counter()
        with tqdm(total=count, desc=f"drawing {count:,} SPs", unit="SP", leave=False,
                  dynamic_ncols=True, disable=None) as bar:
            sp = TorchSP(cfg, instances=count, device=dev, progress=bar.update,
                         compile=compile)
        build_s = time.perf_counter() - start
        steps = max(3, min(learn_steps, 400_000 // (count * cfg.num_cells) + 3))
        # one stream per SP (one SP: its inputs as a single SP takes them)
        X = _random_inputs(cfg, (steps + 1,) + ((count,) if count > 1 else ()), seed=count,
                           device=dev)
        start = timer.now()
        sp.step(X[-1], learn=True)      # the first step compiles, with `compile`
        first_step_s = timer.now() - start
        per_step, done = _timed_steps(lambda k: sp.step(X[k % len(X)], learn=True), steps,
                                      min_seconds, timer)
        exchange = _exchange_seconds(sp, timer)
        row = {"model": "TorchSP, compiled" if compile else "TorchSP", "device": str(dev),
               "threads": threads, "instances": count,
               "learn_step_ms": round(per_step * 1e3, 4),
               "learn_inputs_per_s": round(count / per_step),
               "over_golden": round(count * golden["learn_step_ms"] / (per_step * 1e3), 2),
               "exchange_ms_per_step": round(exchange * 1e3, 4),
               "exchange_us_per_input": round(exchange / count * 1e6, 3),
               "steps_timed": done, "build_s": round(build_s, 2),
               "first_step_s": round(first_step_s, 2)}
        rows.append(row)
        say(f"  {row['model']} x{count:<5d}: {row['learn_step_ms']:9.3f} ms a lockstep learning "
            f"step (the first {first_step_s:.1f} s), "
            f"{row['learn_inputs_per_s']:>9,d} inputs/s in all ({row['over_golden']}x the "
            f"golden model's); 3x3 exchange {row['exchange_ms_per_step']:.3f} ms a step, "
            f"{row['exchange_us_per_input']:.3f} us an input; built in {build_s:.1f} s")
        del sp, X

    sp = TorchSP(cfg, device=dev)
    X = _random_inputs(cfg, (infer_inputs,), seed=1, device=dev)
    infer_s, _ = _timed_steps(lambda k: sp.infer(X), 1, min_seconds, timer)
    batched = {"model": "TorchSP", "device": str(dev), "threads": threads, "instances": 1,
               "batch": infer_inputs, "infer_inputs_per_s": round(infer_inputs / infer_s)}
    say(f"  TorchSP batched inference: {batched['infer_inputs_per_s']:,d} inputs/s "
        f"({infer_inputs:,d} inputs a call)")

    # the golden model again, after the TorchSP rows: the ratios are against the mean of its
    # two timings (the load on a shared machine moves within a run)
    after = _golden_learn_step_ms(cfg, min_seconds, learn_steps)
    load.append(round(os.getloadavg()[0], 2))
    golden["learn_step_ms_after"] = round(after, 4)
    mean_ms = (golden["learn_step_ms"] + after) / 2
    for row in rows:
        row["over_golden"] = round(row["instances"] * mean_ms / row["learn_step_ms"], 2)
    say(f"  golden model again: {after:.3f} ms a learning step (before: "
        f"{golden['learn_step_ms']:.3f}); ratios against the mean; load average {load[-1]:.1f}")
    boards = board_rows()
    by_count = {r["instances"]: r for r in rows}
    checks = {}
    if 4096 in by_count:
        checks["lockstep_4096_over_golden"] = by_count[4096]["over_golden"]
    if 1 in by_count and not compile:    # the one-SP target is the eager step's
        checks["single_step_over_golden"] = round(by_count[1]["learn_step_ms"] / mean_ms, 2)
    met = {"lockstep_4096_over_golden": lambda v: v >= TARGETS["lockstep_4096_over_golden"],
           "single_step_over_golden": lambda v: v <= TARGETS["single_step_over_golden"]}
    targets = {k: {"value": v, "target": TARGETS[k], "met": met[k](v)} for k, v in checks.items()}
    data = {"benchmark": "torch", "config": cfg.to_dict(), "device": str(dev),
            "threads": threads, "compile": bool(compile), "torch": torch.__version__,
            "machine": machine_info(),
            "load_average": load, "golden_learn_step_ms_mean": round(mean_ms, 4),
            "reference": reference, "lockstep": rows, "batched": batched, "boards": boards,
            "targets": targets}
    data["table"] = table_lines(data)
    return data


def table_lines(data: dict) -> list[str]:
    """The figures as one markdown table (BENCHMARKS.md's layout)."""
    cells = "x".join(str(v) for v in data["config"]["cell_shape"])
    lines = ["| implementation | where | SPs | learning: ms a step | learning: inputs/s | "
             "inference: inputs/s | 3x3 exchange a step / an input |",
             "|---|---|---|---|---|---|---|"]
    for r in data["reference"]:
        again = f" (again after: {r['learn_step_ms_after']:.3f})" \
            if "learn_step_ms_after" in r else ""
        lines.append(f"| {r['model']} ({cells} cells) | CPU, 1 thread | 1 | "
                     f"{r['learn_step_ms']:.3f}{again} | {r['learn_inputs_per_s']:,d} | "
                     f"{r['infer_inputs_per_s']:,d} | |")
    for r in data["lockstep"]:
        lines.append(f"| {r['model']} ({cells} cells) | {r['device']}, {r['threads']} thread(s) | "
                     f"{r['instances']:,d} | {r['learn_step_ms']:.3f} | "
                     f"{r['learn_inputs_per_s']:,d} ({r['over_golden']}x golden) | | "
                     f"{r['exchange_ms_per_step']:.3f} ms / {r['exchange_us_per_input']:.3f} us |")
    b = data["batched"]
    lines.append(f"| TorchSP ({cells} cells), batched | {b['device']}, {b['threads']} thread(s) | "
                 f"1 | | | {b['infer_inputs_per_s']:,d} ({b['batch']:,d} a call) | |")
    for r in data["boards"]:
        lines.append(f"| array on {r['board']} ({r['cells']} cells, P = {r['cells_per_pe']}) | "
                     f"{r['clock_hz'] / 1e6:g} MHz | 1 | {r['learn_cycles']:,d} cycles = "
                     f"{r['learn_cycles'] / r['clock_hz'] * 1e3:.4f} | "
                     f"{r['learn_inputs_per_s']:,d} (UART: {r['uart_inputs_per_s_pipelined']:,.0f}) | "
                     f"{r['infer_inputs_per_s']:,d} | {r['exchange_cycles_learning']} cycles = "
                     f"{r['exchange_us_per_input']:.2f} us |")
    return lines
