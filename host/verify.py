"""`cellsp verify`: random inputs through the simulated HDL and the golden model side by side;
`verify_netlist`: the same through a board's synthesised netlist (`cellsp verify --netlist`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np

from cellsp.boards.boards import Board
from cellsp.boards.fit import cycles_per_input
from cellsp.boards.netlist import board_netlist
from cellsp.sim.compare import compare_run
from cellsp.sim.config import SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.golden import GoldenModel
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout
from cellsp.host.array_amaranth import AmaranthArraySim
from cellsp.host.array_run import Operation, Results, StepResult
from cellsp.host.array_verilator import VerilatorArraySim
from cellsp.host.pty_link import board_netlist_pty_link
from cellsp.host.targets import open_driver

__all__ = ["verify", "VerifyReport", "make_simulator", "DriverArraySim", "verify_netlist",
           "model_speed", "reply_timeout"]


@dataclass
class VerifyReport:
    """What a verify run found: steps run, differing values (active bits and state values),
    and messages naming the first differences of each chunk."""

    steps: int = 0
    mismatches: int = 0
    messages: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary `cellsp verify` ends with."""
        return f"verify: {self.steps} steps, {self.mismatches} mismatches"


class DriverArraySim:
    """The array of `geometry` behind the protocol engine and the host driver (`transport`:
    a target of `open_driver`), with the simulators' `run`."""

    def __init__(self, geometry: ArrayGeometry, transport: str, timeout: float = 5.0):
        self.geometry = geometry
        self.config = geometry.config
        self.log = None
        self.transport = transport
        self.timeout = timeout
        self.driver = None

    def run(self, operations: list) -> Results:
        """Loads, steps and reads in order; consecutive steps with one learn flag go out as
        one pipelined run."""
        if self.driver is None:
            self.driver = open_driver(self.transport, self.geometry, timeout=self.timeout,
                                      log=self.log)
        results = Results()
        for (kind, learn), group in groupby(operations, key=lambda op: (op.kind, op.learn)):
            group = list(group)
            if kind == "step":
                out, cycles = self.driver.run(np.stack([op.x for op in group]), learn=learn,
                                              window=8)
                results.steps += [StepResult(a, int(c)) for a, c in zip(out, cycles)]
            elif kind == "load":
                for op in group:
                    self.driver.load_state(op.state)
            elif kind == "read":
                results.states += [self.driver.read_state() for _ in group]
            else:
                raise ValueError(f"operation {kind!r} is not supported through the protocol")
        return results

    def close(self) -> None:
        """Close the driver (and its transport), if one was opened."""
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.close()


def make_simulator(kind: str, geometry: ArrayGeometry, *, idle: float = 0.0,
                   stall: float = 0.0, seed: int = 0):
    """An Amaranth ('amaranth') or Verilator ('verilator') simulation of the array of
    `geometry`, with idle and back-pressure probabilities and their seed."""
    if kind == "amaranth":
        return AmaranthArraySim(geometry, idle=idle, stall=stall, seed=seed)
    if kind == "verilator":
        return VerilatorArraySim(geometry, idle=idle, stall=stall, seed=seed)
    raise ValueError(f"unknown simulator {kind!r}: use 'amaranth' or 'verilator'")


def verify(config: SPConfig, sim: str = "verilator", steps: int = 100, learn: bool = True,
           seed: int = 0, chunk: int = 250, progress=None, log=None, *,
           transport: str | None = None, input_width: int | None = None, lanes: int = 4,
           cells_per_pe: int = 1, parallel_count: bool = False, idle: float = 0.0,
           stall: float = 0.0, geometry: ArrayGeometry | None = None,
           timeout: float = 5.0) -> VerifyReport:
    """Run `steps` random inputs (learning if `learn`) through the simulated array and the
    golden model; count differing output bits and, after every chunk, differing state values.

    The array is `sim` ('amaranth' or 'verilator') with the idle and stall probabilities, or,
    with `transport` (a target of `open_driver`), the array behind the protocol engine and the
    host driver (`timeout`: seconds it waits for a reply before resending). input_width,
    lanes, cells_per_pe and parallel_count shape its geometry
    (`ArrayGeometry.for_config`), unless `geometry` is given (a board's). The run is cut into
    chunks: each chunk loads the golden model's state into the array, runs its inputs and
    reads the whole state back, so read-back and load are verified too.
    """
    if geometry is None:
        geometry = ArrayGeometry.for_config(config, input_width, lanes, cells_per_pe,
                                            parallel_count=parallel_count)
    if transport:
        simulator = DriverArraySim(geometry, transport, timeout)
    else:
        simulator = make_simulator(sim, geometry, idle=idle, stall=stall, seed=seed)
    if log and hasattr(simulator, "log"):
        simulator.log = log
    try:
        return _compare(simulator, config, steps, learn, seed, chunk, progress)
    finally:
        if isinstance(simulator, DriverArraySim):
            simulator.close()


def _compare(simulator, config: SPConfig, steps: int, learn: bool, seed: int, chunk: int,
             progress) -> VerifyReport:
    """`verify`'s chunks through `simulator` and the golden model."""
    rng = np.random.default_rng(seed)
    golden = GoldenModel(config)
    report = VerifyReport()
    for start in range(0, steps, chunk):
        count = min(chunk, steps - start)
        density = rng.uniform(0.15, 0.45)
        X = rng.random((count,) + tuple(config.input_shape)) < density
        ops = ([Operation("load", state=golden.state())]
               + [Operation("step", x=x, learn=learn) for x in X] + [Operation("read")])
        result = simulator.run(ops)
        expected = golden.run(X, learn=learn)
        mismatches = compare_run(expected, result.active_maps(), golden.state(),
                                 result.states[-1], first_step=start, limit=5)
        report.mismatches += mismatches.count
        report.messages += mismatches.messages
        report.steps += count
        if progress:
            progress(count)
    return report


def verify_netlist(board: Board, config: SPConfig, cells_per_pe: int, steps: int = 200,
                   learn: bool = True, seed: int = 0,
                   synth_options: tuple[str, ...] | None = None, progress=None,
                   log=None) -> tuple[VerifyReport, dict]:
    """`verify` through the netlist of `board`'s build of `config`: what Yosys hands to
    nextpnr, with the vendor's cell models, compiled by Verilator behind the pty harness at
    the board's bit period (`cellsp.host.pty_link.board_netlist_pty_link`), talked to by the
    host driver over the pty. Returns the report and the figures: seconds of synthesis, of
    the Verilator build and of the run (0 for a step found in the cache), and the netlist's
    primitive counts."""
    start = time.perf_counter()
    netlist = board_netlist(board, config, cells_per_pe, synth_options)
    figures = {"board": board.name, "cells": config.num_cells,
               "cell_shape": list(config.cell_shape), "cells_per_pe": cells_per_pe,
               "synth_options": list(netlist.synth_options),
               "synthesis_s": round(time.perf_counter() - start, 1),
               "synthesis_s_when_built": netlist.info["synthesis_seconds"],
               "netlist_cells": netlist.info["cells"]}
    link = board_netlist_pty_link(board, config, cells_per_pe, netlist.synth_options)
    start = time.perf_counter()
    link.build()
    figures["build_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    geometry = board.geometry(config, cells_per_pe)
    with link as port:
        speed = model_speed(link)
        timeout = reply_timeout(geometry, link.bit_cycles, speed)
        if log:
            log(f"the netlist model runs {speed:,.0f} cycles a second: the driver waits "
                f"{timeout:.0f} s for a reply before resending")
        report = verify(config, steps=steps, learn=learn, seed=seed, progress=progress,
                        log=log, transport=f"serial:{port}@{board.baud}", geometry=geometry,
                        timeout=timeout)
    figures["run_s"] = round(time.perf_counter() - start, 1)
    figures["model_cycles_per_s"] = round(speed)
    figures["reply_timeout_s"] = round(timeout, 1)
    figures.update(steps=report.steps, mismatches=report.mismatches)
    return report, figures


def model_speed(link, seconds: float = 2.0) -> float:
    """Clock cycles a second of the pty harness behind `link` (its `stats` counters), measured
    over at least `seconds`. The harness answers between runs of many cycles (and an idle one
    blocks between them), so this is a lower bound: a timeout from it errs long."""
    first, start = link.stats(600.0)["cycles"], time.perf_counter()
    time.sleep(seconds)
    last, end = link.stats(600.0)["cycles"], time.perf_counter()
    return max(1.0, (last - first) / (end - start))


def reply_timeout(geometry: ArrayGeometry, bit_cycles, cycles_per_s: float) -> float:
    """Seconds the driver should wait for a reply from a model that runs `cycles_per_s`: four
    times the simulated time of the longest exchange (the longest request and the longest
    reply on the line at `bit_cycles` a bit, and a window of steps), at least 5 s. A
    gate-level netlist runs a few thousand cycles a second, where a board's 5 s would expire
    before a LOAD_CHUNK's bytes have crossed the line."""
    lay = ProtocolLayout.for_geometry(geometry)
    line = 10 * float(bit_cycles) * (2 * (HEADER + TRAILER) + lay.max_payload + lay.max_reply)
    steps = lay.reply_window * cycles_per_input(geometry)
    return max(5.0, 4 * (line + steps) / cycles_per_s)
