"""`cellsp bench boards`: build growing arrays on each board and keep the largest that meets
timing at the board's clock, with its resources and throughput."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from cellsp.sim.bench import machine_info, time_per_item
from cellsp.sim.config import SPConfig
from cellsp.sim.software_sp import SoftwareSP

from .boards import BOARDS, ICEBREAKER_CONFIG, Board
from .build import BuildError, build_board
from .fit import FitError

__all__ = ["SWEEPS", "bench_boards", "build_count", "sweep_board", "table_rows",
           "software_sp_inputs_per_s"]

#: Candidate arrays per device family, smallest first: (config, cells per PE). The UP5K
#: holds one PE (about 700 logic cells), so its arrays are a single PE serving every cell
#: (the iCEBreaker's config, growing); the ECP5-85F boards grow the default config's cell grid.
SWEEPS: dict[str, list[tuple[SPConfig, int]]] = {
    "ice40": [(ICEBREAKER_CONFIG.replace(cell_shape=(n, n)), n * n) for n in (8, 10, 11, 12)],
    "ecp5": [(SPConfig(cell_shape=(8, 8)), 8), (SPConfig(cell_shape=(16, 16)), 16),
             (SPConfig(), 16)],
}


def _name(config: SPConfig, p: int) -> str:
    h, w = config.cell_shape
    hin, win = config.input_shape
    return f"{h}x{w} cells, {hin}x{win} input, r={config.potential_radius}, P={p}"


def sweep_board(board: Board, out_root: Path, candidates=None, progress=None,
                log=None) -> dict:
    """Build each candidate on `board` in order until one does not fit or misses timing;
    returns every attempt and the largest that met timing (``best``). `progress()` is called
    after each build, `log(line)` with its result."""
    log = log or (lambda line: None)
    attempts, best, best_config = [], None, None
    for config, p in candidates or SWEEPS[board.device.family]:
        name = _name(config, p)
        h, w = config.cell_shape
        out_dir = Path(out_root) / board.name / f"{h}x{w}-p{p}"
        row = {"board": board.name, "config": name, "cells": config.num_cells, "cells_per_pe": p}
        try:
            report = build_board(board, config, p, out_dir)   # FitError first
        except (FitError, BuildError) as exc:
            row.update(result="does not fit", message=str(exc))
            attempts.append(row)
            log(f"  {board.name}, {name}: {exc}")
            if progress:
                progress()
            break
        row.update(result="timing met" if report["timing_met"] else "timing missed",
                   report=str(out_dir / "report.json"), **_summary(report))
        attempts.append(row)
        log(f"  {board.name}, {name}: {row['logic_pct']}% {report['logic_unit']}, "
            f"{row['bram_pct']}% block RAM, {report['achieved_clock_mhz']} MHz achieved "
            f"(target {report['target_clock_mhz']}), {row['result']}; "
            f"{report['build_seconds']} s")
        if progress:
            progress()
        if not report["timing_met"]:
            break
        best, best_config = row, config.to_dict()
    return {"board": board.name, "device": board.device.part, "attempts": attempts,
            "best": best, "best_config": best_config}


def _summary(report: dict) -> dict:
    def pct(field):
        used, available = report[field]["used"], report[field]["available"]
        return round(100 * used / available, 1) if available else None

    return {"logic_used": report["logic"]["used"], "logic_pct": pct("logic"),
            "ffs_used": report["ffs"]["used"], "bram_used": report["bram"]["used"],
            "bram_pct": pct("bram"), "achieved_clock_mhz": report["achieved_clock_mhz"],
            "target_clock_mhz": report["target_clock_mhz"],
            "cycles_per_input": report["cycles_per_input"],
            "inputs_per_s": report["inputs_per_s_at_target_clock"],
            "inputs_per_s_at_fmax": report["inputs_per_s_at_achieved_clock"],
            "uart_inputs_per_s": report["uart_inputs_per_s"],
            "uart_inputs_per_s_pipelined": report["uart_pipelined"],
            "build_seconds": report["build_seconds"], "estimate": report["estimate"]}


def software_sp_inputs_per_s(config: SPConfig, steps: int = 100,
                             min_seconds: float = 1.0) -> dict:
    """The classic software SP (`SoftwareSP.from_config`) on `config`, on one core of this
    machine: inputs per second learning (one input at a time, online) and inferring (batched),
    medians over repeats of at least `min_seconds`; random inputs, 30% of bits on."""
    X = np.random.default_rng(0).random((512,) + tuple(config.input_shape)) < 0.3
    with threadpool_limits(limits=1):
        sp = SoftwareSP.from_config(config)
        sp.run(X[:steps], learn=True)
        learn, _ = time_per_item(lambda: sp.run(X[:steps], learn=True), steps, min_seconds)
        infer, _ = time_per_item(lambda: sp.run(X, learn=False), len(X), min_seconds)
    return {"learning": round(1 / learn), "inference": round(1 / infer)}


def table_rows(results: list[dict]) -> list[str]:
    """The summary table (Markdown) of `bench_boards` results: one row per board, with the
    software SP's speed on the same config on this machine."""
    rows = ["| board | largest config meeting timing | LUT/LC % | BRAM % | clock (achieved) "
            "| cycles/input | inputs/s at clock | UART-limited inputs/s (round trip / "
            "pipelined) | software SP, this machine (learning / inference inputs/s) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        b = res["best"]
        if b is None:
            rows.append(f"| {res['board']} | none | | | | | | | |")
            continue
        soft = res.get("software_sp") or {}
        rows.append(
            f"| {res['board']} | {b['config']} | {b['logic_pct']} | {b['bram_pct']} | "
            f"{b['target_clock_mhz']} MHz ({b['achieved_clock_mhz']}) | {b['cycles_per_input']} "
            f"| {b['inputs_per_s']:,.0f} | {b['uart_inputs_per_s']:,.0f} / "
            f"{b['uart_inputs_per_s_pipelined']:,.0f} | "
            f"{soft.get('learning', 0):,} / {soft.get('inference', 0):,} |")
    return rows


def build_count(boards=None) -> int:
    """The most builds `bench_boards(boards)` makes (a sweep stops at its first failure)."""
    return sum(len(SWEEPS[BOARDS[n].device.family]) for n in boards or BOARDS)


def bench_boards(boards=None, out_root="build/bench-boards", progress=None, log=None) -> dict:
    """Sweep each board (default: all) and return the results with the machine's description.
    `progress(board)` is called after each build, `log(line)` with each build's result."""
    results = []
    for name in boards or list(BOARDS):
        done = (lambda name=name: progress(name)) if progress else None
        res = sweep_board(BOARDS[name], Path(out_root), progress=done, log=log)
        if res["best_config"] is not None:
            res["software_sp"] = software_sp_inputs_per_s(SPConfig.from_dict(res["best_config"]))
        results.append(res)
    return {"benchmark": "boards", "machine": machine_info(), "results": results,
            "table": table_rows(results)}
