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

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.config import SPConfig
from cellsp.sim.compare import compare_run
from cellsp.host.array_run import Results, StreamPacing, StreamPort, collect, feed


class StreamBus:
    """valid/ready/payload signals of one stream of the top level, by name prefix."""

    def __init__(self, dut, name):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")


class Bench(StreamPort):
    """The array's streams in cocotb, with the run's idle and back-pressure pattern."""

    def __init__(self, dut, geometry: ArrayGeometry, pacing: StreamPacing):
        super().__init__(geometry, pacing)
        self.dut = dut
        self.clk = dut.clk
        self.buses = {name: StreamBus(dut, name)
                      for name in ("inputs", "outputs", "command", "state_in", "state_out")}
        for name in ("inputs", "command", "state_in"):
            self.buses[name].valid.value = 0
        for name in ("outputs", "state_out"):
            self.buses[name].ready.value = 0

    async def tick(self):
        await RisingEdge(self.clk)

    async def offer(self, stream, value):
        bus = self.buses[stream]
        bus.valid.value = 1
        bus.payload.value = value
        while True:
            await ReadOnly()
            ready = int(bus.ready.value)
            await RisingEdge(self.clk)
            if ready:
                break
        bus.valid.value = 0

    async def sink_cycle(self, stream, ready):
        bus = self.buses[stream]
        bus.ready.value = int(ready)
        await ReadOnly()
        valid = int(bus.valid.value)
        payload = int(bus.payload.value) if valid else None
        await RisingEdge(self.clk)
        if ready and valid:
            bus.ready.value = 0
            return payload
        return None

    async def reset(self, cycles=2):
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.clk)
        self.dut.rst.value = 0

    def now(self):
        return get_sim_time("ns") // 10


def spec_geometry(spec: dict) -> ArrayGeometry:
    """The array geometry a run's specification names: (config as a dict, input_width, lanes,
    cells_per_pe, row_scan), the fields that decide the streams' widths and the state word
    order."""
    cfg_dict, input_width, lanes, cells_per_pe, row_scan = spec["geometry"]
    return ArrayGeometry(SPConfig.from_dict(cfg_dict), input_width=input_width, lanes=lanes,
                         cells_per_pe=cells_per_pe, row_scan=row_scan)


@cocotb.test()
async def run_operations(dut):
    """Execute the operations of $CELLSP_SPEC (`feed` and `collect`, the plan shared with the
    Amaranth runner) and check each step against the golden model as it comes."""
    with open(os.environ["CELLSP_SPEC"], "rb") as fh:
        spec = pickle.load(fh)
    pacing = StreamPacing(spec["idle"], spec["stall"], spec["seed"])
    bench = Bench(dut, spec_geometry(spec), pacing)
    expected = spec.get("expected")
    operations = spec["operations"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await bench.reset()
    collected = [0]

    def check(t, result):
        if expected is None:
            return None
        mismatches = compare_run(expected[t:t + 1], result.active[None], first_step=t)
        return str(mismatches) if mismatches else None

    feeding = cocotb.start_soon(feed(bench, bench.geometry, operations, collected))
    results = Results()
    try:
        results = await collect(bench, bench.geometry, operations, collected, check)
        if results.failure is None:
            await feeding
    except Exception as exc:      # a timeout: keep what came, name it
        results.failure = f"{type(exc).__name__}: {exc}"
    finally:
        feeding.cancel()
        with open(os.environ["CELLSP_RESULTS"], "wb") as fh:
            pickle.dump(results, fh)
    assert results.failure is None, results.failure
