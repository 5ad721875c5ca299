"""cocotb test bench for the cell array (run inside Verilator by `VerilatorArraySim`).

It reads the run's specification from $CELLSP_SPEC (a pickle written by the runner: geometry,
operations, idle/stall probabilities, seed and optionally the golden model's expected outputs),
drives the streams cycle by cycle, checks every step against the expected outputs as it goes,
and writes what came out to $CELLSP_RESULTS, with the cycle at which each step's last row
arrived (for throughput).
"""

from __future__ import annotations

import os
import pickle
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from cellsp.hdl.geometry import ArrayGeometry
from cellsp.sim.config import SPConfig
from cellsp.sim.compare import step_mismatches
from cellsp.sim.hdl_run import Results, StepResult, input_beats


class StreamBus:
    """valid/ready/payload signals of one stream of the top level, by name prefix."""

    def __init__(self, dut, name):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")


class Bench:
    def __init__(self, dut, spec):
        cfg_dict, input_width, lanes, cells_per_pe = spec["geometry"]
        self.config = SPConfig.from_dict(cfg_dict)
        self.geometry = ArrayGeometry(self.config, input_width=input_width, lanes=lanes,
                                      cells_per_pe=cells_per_pe)
        self.dut = dut
        self.clk = dut.clk
        self.rng = random.Random(spec["seed"])
        self.idle, self.stall = spec["idle"], spec["stall"]
        self.inputs = StreamBus(dut, "inputs")
        self.outputs = StreamBus(dut, "outputs")
        self.command = StreamBus(dut, "command")
        self.state_in = StreamBus(dut, "state_in")
        self.state_out = StreamBus(dut, "state_out")
        for bus in (self.inputs, self.command, self.state_in):
            bus.valid.value = 0
        for bus in (self.outputs, self.state_out):
            bus.ready.value = 0

    async def put(self, bus, value):
        while self.rng.random() < self.idle:
            await RisingEdge(self.clk)
        bus.valid.value = 1
        bus.payload.value = value
        while True:
            await ReadOnly()
            ready = int(bus.ready.value)
            await RisingEdge(self.clk)
            if ready:
                break
        bus.valid.value = 0

    async def get(self, bus):
        while True:
            ready = self.rng.random() >= self.stall
            bus.ready.value = int(ready)
            await ReadOnly()
            valid = int(bus.valid.value)
            payload = int(bus.payload.value) if valid else None
            await RisingEdge(self.clk)
            if ready and valid:
                bus.ready.value = 0
                return payload

    async def reset(self, cycles=2):
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.clk)
        self.dut.rst.value = 0

    async def step(self, x, learn):
        g = self.geometry
        h, w = self.config.cell_shape
        learn_bit = int(learn) << g.input_width
        for bits in input_beats(g, x):
            await self.put(self.inputs, bits | learn_bit)
        rows, cycles = [], 0
        for _ in range(h):
            payload = await self.get(self.outputs)
            rows.append([(payload >> j) & 1 for j in range(w)])
            cycles = (payload >> (w + 1)) & 0xFFFFFFFF
        return StepResult(np.array(rows, bool), cycles)

    async def load(self, state):
        await self.put(self.command, 1)
        for word in self.geometry.state_to_words(state):
            await self.put(self.state_in, word)

    async def read(self):
        await self.put(self.command, 0)
        words = [await self.get(self.state_out) for _ in range(self.geometry.state_words)]
        return self.geometry.words_to_state(words)


@cocotb.test()
async def run_operations(dut):
    """Execute the operations of $CELLSP_SPEC and check each step against the golden model.

    Like a host with a send and a receive side, a feeder task sends inputs, commands and
    state words back to back while this task collects outputs and read-backs; commands,
    resets and loads wait until everything sent before them has been collected.
    """
    with open(os.environ["CELLSP_SPEC"], "rb") as fh:
        spec = pickle.load(fh)
    bench = Bench(dut, spec)
    expected = spec.get("expected")
    results = Results()
    operations = spec["operations"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await bench.reset()
    collected = [0]
    g = bench.geometry

    async def wait_collected(count):
        while collected[0] < count:
            await RisingEdge(bench.clk)

    async def feeder():
        issued = 0
        for op in operations:
            if op.kind in ("step", "interrupt"):
                if op.kind == "interrupt":
                    await wait_collected(issued)
                learn_bit = int(op.learn) << g.input_width
                for bits in input_beats(g, op.x):
                    await bench.put(bench.inputs, bits | learn_bit)
                if op.kind == "interrupt":
                    for _ in range(op.ticks):
                        await RisingEdge(bench.clk)
                    await bench.reset()
                    continue
                issued += 1
            elif op.kind == "load":
                await wait_collected(issued)
                await bench.load(op.state)
            elif op.kind == "read":
                await wait_collected(issued)
                await bench.put(bench.command, 0)
                issued += 1
            elif op.kind == "reset":
                await wait_collected(issued)
                await bench.reset()
            else:
                raise ValueError(f"unknown operation {op.kind!r}")

    feeding = cocotb.start_soon(feeder())
    h, w = bench.config.cell_shape
    first_cycle = None
    try:
        for op in operations:
            if op.kind == "step":
                rows, cycles = [], 0
                for _ in range(h):
                    payload = await bench.get(bench.outputs)
                    rows.append([(payload >> j) & 1 for j in range(w)])
                    cycles = (payload >> (w + 1)) & 0xFFFFFFFF
                result = StepResult(np.array(rows, bool), cycles)
                now = get_sim_time("ns") // 10
                first_cycle = now if first_cycle is None else first_cycle
                results.cycle_stamps.append(now)
                t = len(results.steps)
                results.steps.append(result)
                collected[0] += 1
                if expected is not None:
                    problems = step_mismatches(expected[t:t + 1], result.active[None],
                                               first_step=t)
                    if problems:
                        results.failure = "hardware differs from the golden model:\n  " + \
                            "\n  ".join(problems)
                        break
            elif op.kind == "read":
                words = [await bench.get(bench.state_out) for _ in range(g.state_words)]
                results.states.append(g.words_to_state(words))
                collected[0] += 1
        if results.failure is None:
            await feeding
    finally:
        feeding.cancel()
        with open(os.environ["CELLSP_RESULTS"], "wb") as fh:
            pickle.dump(results, fh)
    assert results.failure is None, results.failure
