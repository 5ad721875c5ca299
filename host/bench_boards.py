"""Per board, end to end: how many inputs a second the array steps at the board's clock, how
many the board's UART carries for learning and for inference in each reply format, and the
classic software SP on one core on the same config, side by side (`cellsp bench links`).

    rows = board_rows(BOARDS.values(), build_root="build")

The array's figures come from a build's ``report.json`` where one exists for the same config
and cells per PE (`report_for`), else from the fit estimate (`cellsp.boards.fit`); each row
says which. A reply format is a function of the geometry giving, per mode ("learning",
"inference"), the bytes a step costs on the wire, request and reply with their frames
(`protocol2_step_bytes`: a STEP and its full reply; `batch_step_bytes`: protocol 3's BATCH,
learning without the maps, only on boards whose engine has it: a format that does not apply
to a board gives None and the board's row leaves it out, naming it in ``formats_not_offered``);
formats with other sizes plug in through `board_rows(..., formats=...)`.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cellsp.boards.boards import BOARDS, Board
from cellsp.boards.fit import cycles_per_input, estimate
from cellsp.boards.sweep import software_sp_inputs_per_s
from cellsp.sim.bench import machine_info
from cellsp.sim.config import SPConfig
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout

__all__ = ["MODES", "StepBytes", "protocol2_step_bytes", "batch_step_bytes", "link_inputs_per_s", "report_for",
           "board_arrays", "board_row", "board_rows", "rows_json", "table_lines",
           "simulated_lines"]

#: the two ways a step runs: learning (the host sends the learn flag) and inference
MODES = ("learning", "inference")

#: bits on the line per byte: a start bit, 8 data bits, a stop bit
BITS_PER_BYTE = 10


@dataclass(frozen=True)
class StepBytes:
    """Bytes on the wire per step, each direction, frames included. `request` counts what the
    host sends per step and `reply` what the board sends back per step (a reply format that
    answers several steps at once counts its share)."""

    request: float
    reply: float


#: a reply format: (geometry, board) -> {mode: StepBytes}, or None where the board's engine
#: does not speak it
ReplyFormat = Callable[[object, Board], "dict | None"]


def protocol2_step_bytes(geometry, board: Board | None = None) -> dict[str, StepBytes]:
    """A STEP request and its full reply (the prefix, the cycles and every cell's active bit)
    per step, learning or not (host/PROTOCOL.md)."""
    lay = ProtocolLayout.for_geometry(geometry)
    frame = HEADER + TRAILER
    step = StepBytes(frame + lay.step_request, frame + lay.step_reply)
    return {mode: step for mode in MODES}


def batch_step_bytes(geometry, board: Board | None = None) -> dict[str, StepBytes] | None:
    """Learning in full BATCH requests (`cellsp run --no-outputs`): each step's share of a
    request of `batch_steps` inputs and of its one reply (the count and the check). Inference
    needs the maps, so it stays a STEP. None for a board whose engine has no BATCH
    (`Board.batching` False): it learns in STEPs only."""
    if board is not None and not board.batching:
        return None
    steps = protocol2_step_bytes(geometry, board)
    lay = ProtocolLayout.for_geometry(geometry)
    k = lay.batch_steps
    if k:
        frame = HEADER + TRAILER
        steps["learning"] = StepBytes((frame + lay.batch_request(k)) / k,
                                      (frame + lay.batch_reply) / k)
    return steps


#: the reply formats measured by default: name -> ReplyFormat
DEFAULT_FORMATS: dict[str, ReplyFormat] = {"STEP": protocol2_step_bytes,
                                           "BATCH learning": batch_step_bytes}


def link_inputs_per_s(baud: int, step: StepBytes, pipelined: bool = True) -> float:
    """Inputs a second a UART at `baud` carries at `step`'s bytes: `pipelined` (requests sent
    ahead of the replies, as `cellsp run` does: the longer direction counts) or a round trip
    per step (request plus reply)."""
    nbytes = max(step.request, step.reply) if pipelined else step.request + step.reply
    return baud / BITS_PER_BYTE / nbytes


def report_for(build_root, board: Board, config: SPConfig, cells_per_pe: int,
               parallel_count: bool = False) -> tuple[dict | None, Path | None]:
    """(report, path) of a build of exactly this config and cells per PE at the board's clock,
    with its synthesis options and kind of array (`Board.row_scan`) under `build_root` (any
    ``report.json`` below it, e.g. what `cellsp build --out` wrote), or (None, None). A report
    that missed timing counts as none."""
    if build_root is None or not Path(build_root).is_dir():
        return None, None
    for path in sorted(Path(build_root).rglob("report.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (report.get("board") == board.name and report.get("config_hash") == config.hash
                and report.get("cells_per_pe") == cells_per_pe
                and report.get("target_clock_mhz") == round(board.clock_hz / 1e6, 3)
                and tuple(report.get("synth_options", ())) == tuple(board.synth_options)
                and bool(report.get("parallel_count", False)) == parallel_count
                and bool(report.get("row_scan", False)) == (board.row_scan and not parallel_count)
                and report.get("timing_met")):
            return report, path
    return None, None


def board_arrays(board: Board) -> list[tuple[str, SPConfig, int]]:
    """(name, config, cells per PE) of the board's default array and the arrays it offers."""
    return [("default", board.default_config, board.default_cells_per_pe)] + [
        (a.name, a.config, a.cells_per_pe) for a in board.arrays]


def board_row(board: Board, array: str, config: SPConfig, cells_per_pe: int, *,
              build_root=None, formats: dict[str, ReplyFormat] | None = None,
              software: dict | None = None, baud: int | None = None) -> dict:
    """One row: the array at the board's clock, the link per mode and reply format (at `baud`,
    default the board's), end to end (the slower of the two) and the software SP (`software`:
    {"learning": ..., "inference": ...} inputs a second, or None when not measured)."""
    formats = DEFAULT_FORMATS if formats is None else formats
    baud = board.baud if baud is None else baud
    geometry = board.geometry(config, cells_per_pe)
    report, path = report_for(build_root, board, config, cells_per_pe)
    cycles = {"learning": cycles_per_input(geometry, learn=True),
              "inference": cycles_per_input(geometry, learn=False)}
    if report is not None:
        source = f"build {path}"
        fmax, logic = report.get("achieved_clock_mhz"), report.get("logic", {}).get("used")
    else:
        est = estimate(board, config, cells_per_pe)
        source = "fit estimate (no build report)"
        fmax, logic = None, est.logic
    array_rate = {mode: board.clock_hz / cycles[mode] for mode in MODES}
    link, end_to_end, not_offered = {}, {}, []
    for name, fmt in formats.items():
        steps = fmt(geometry, board)
        if steps is None:               # the board's engine does not speak this format
            not_offered.append(name)
            continue
        link[name] = {mode: {"request_bytes": steps[mode].request,
                             "reply_bytes": steps[mode].reply,
                             "pipelined": round(link_inputs_per_s(baud, steps[mode]), 1),
                             "round_trip": round(link_inputs_per_s(baud, steps[mode], False), 1)}
                      for mode in MODES}
        end_to_end[name] = {mode: round(min(array_rate[mode], link[name][mode]["pipelined"]), 1)
                            for mode in MODES}
    h, w = config.cell_shape
    row = {"board": board.name, "array": array, "cell_shape": [h, w], "cells": config.num_cells,
           "input_shape": list(config.input_shape), "config_hash": config.hash,
           "cells_per_pe": cells_per_pe, "ring_memory_min": geometry.ring_memory_min,
           "source": source, "logic": logic, "achieved_clock_mhz": fmax,
           "clock_hz": board.clock_hz, "baud": baud, "uart_bridge": board.uart_bridge,
           "bridge_max_baud": board.bridge_max_baud, "cycles_per_input": cycles,
           "array_inputs_per_s": {m: round(v, 1) for m, v in array_rate.items()},
           "link": link, "end_to_end_inputs_per_s": end_to_end,
           "formats_not_offered": not_offered, "software_sp": software}
    if software:
        row["learning_vs_software"] = {
            name: round(e2e["learning"] / software["learning"], 2)
            for name, e2e in end_to_end.items()}
    return row


def board_rows(boards: Iterable[Board] | None = None, *, build_root=None,
               formats: dict[str, ReplyFormat] | None = None,
               software: Callable[[SPConfig], dict] | None = software_sp_inputs_per_s,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """A `board_row` for each board's default array and each array it offers; `software`
    measures the classic software SP on a config (None: not measured), once per config.
    `boards`: default every board."""
    rows, measured = [], {}
    for board in BOARDS.values() if boards is None else boards:
        for array, config, p in board_arrays(board):
            if software is not None and config.hash not in measured:
                if progress:
                    h, w = config.cell_shape
                    progress(f"software SP on {h}x{w} cells ({board.name} {array}), one core")
                measured[config.hash] = software(config)
            # an offered array is built at its own clock and with its own synthesis options
            built = board if array == "default" else board.for_array(array)
            rows.append(board_row(built, array, config, p, build_root=build_root,
                                  formats=formats, software=measured.get(config.hash)))
            if progress:
                progress(table_lines([rows[-1]])[-1])
    return rows


def rows_json(rows: list[dict]) -> dict:
    """The rows with the machine and date they were measured on."""
    return {"benchmark": "links", "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(), "rows": rows}


def table_lines(rows: list[dict]) -> list[str]:
    """A Markdown table: per board and array, the array at its clock, the link per reply
    format (pipelined, learning / inference), end to end and the software SP."""
    lines = ["| board, array | cells (P) | clock, baud | array inputs/s at the clock, learning "
             "/ inference | link inputs/s, learning / inference | end to end, learning / "
             "inference | software SP one core, learning / inference | end-to-end learning / "
             "software | array figures from |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        soft = r["software_sp"]
        soft_text = f"{soft['learning']:,} / {soft['inference']:,}" if soft else "not measured"
        for name in r["link"]:
            link, e2e = r["link"][name], r["end_to_end_inputs_per_s"][name]
            ratio = r.get("learning_vs_software", {}).get(name)
            h, w = r["cell_shape"]
            lines.append(
                f"| {r['board']}, {r['array']} | {h}x{w} ({r['cells_per_pe']}) | "
                f"{r['clock_hz'] / 1e6:g} MHz, {r['baud'] / 1e6:g} Mbaud | "
                f"{r['array_inputs_per_s']['learning']:,.0f} / "
                f"{r['array_inputs_per_s']['inference']:,.0f} | {name}: "
                f"{link['learning']['pipelined']:,.0f} / {link['inference']['pipelined']:,.0f} | "
                f"{e2e['learning']:,.0f} / {e2e['inference']:,.0f} | {soft_text} | "
                f"{f'{ratio:g}x' if ratio is not None else ''} | {r['source']} |")
    return lines


def simulated_lines(rows: list[dict]) -> list[str]:
    """A Markdown table of the rows timed in simulation (``row["simulated"]``, from
    `cellsp.host.link_timing.time_link`): per format, learning, the inputs a second in model
    cycles at the board's clock beside the arithmetic's end-to-end figure (the slower of the
    link, pipelined, and the array) and their ratio, the bytes a step each way, how busy the
    host-to-board line was, and whether every result was bit-exact."""
    lines = ["| board, array | format, learning | timed: inputs/s at the clock (model cycles) | "
             "arithmetic: end to end (link / array) | timed / arithmetic | bytes a step, to / "
             "from the board | line to the board busy | bit-exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sim = r.get("simulated")
        if not sim:
            continue
        for name, timed in sim["formats"].items():
            link = r["link"][name]["learning"]["pipelined"]
            array = r["array_inputs_per_s"]["learning"]
            expected = min(link, array)
            lines.append(
                f"| {r['board']}, {r['array']} | {name} | {timed['inputs_per_s']:,.0f} | "
                f"{expected:,.0f} ({link:,.0f} / {array:,.0f}) | "
                f"{timed['inputs_per_s'] / expected:.0%} | "
                f"{timed['rx_bytes_per_step']:.2f} / {timed['tx_bytes_per_step']:.2f} | "
                f"{timed['line_busy']:.0%} | {'yes' if timed['bit_exact'] else '**no**'} |")
    return lines
