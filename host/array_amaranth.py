"""Run the Amaranth cell array in Amaranth's own simulator (no compiler needed; small arrays).

`AmaranthArraySim` drives the array's streams the way a host would: input beats, state loads
and read-backs, with optional random idle cycles on the inputs and back-pressure on the
outputs, and returns what came out.
"""

from __future__ import annotations

import random

from amaranth.hdl import Value

from cellsp.sim.config import SPConfig
from cellsp.host.array_run import Results, StreamPort, collect, feed

__all__ = ["AmaranthArraySim"]


class AmaranthArraySim:
    """The cell array in Amaranth's simulator.

    idle: probability of an idle cycle before each input beat or state word;
    stall: probability of holding `ready` low on each output or read-back cycle.
    """

    def __init__(self, config: SPConfig, input_width: int | None = None, lanes: int = 4,
                 idle: float = 0.0, stall: float = 0.0, seed: int = 0, cells_per_pe: int = 1,
                 ring_memory_min: int = 0, parallel_count: bool = False):
        from cellsp.hdl.array import CellArray
        from cellsp.sim.geometry import ArrayGeometry

        self.config = config
        self.geometry = ArrayGeometry.for_config(config, input_width, lanes, cells_per_pe,
                                                 ring_memory_min, parallel_count)
        self.dut = CellArray(self.geometry)
        self.idle, self.stall = idle, stall
        self.rng = random.Random(seed)
        #: a collector that waits longer than this for a beat raises instead of hanging
        self.timeout_cycles = 20 * (self.geometry.state_words + 1000)

    def run(self, operations: list, vcd: str | None = None) -> Results:
        from amaranth.hdl import Module, ResetSignal, Signal
        from amaranth.sim import Simulator

        top = Module()
        top.submodules.array = self.dut
        reset = Signal()
        top.d.comb += ResetSignal().eq(reset)
        sim = Simulator(top)
        sim.add_clock(1e-8)
        collected, results = [0], []

        async def feeder(ctx):
            await feed(_Port(self, ctx, reset), self.geometry, operations, collected)

        async def collector(ctx):
            results.append(await collect(_Port(self, ctx, reset), self.geometry, operations,
                                         collected))

        sim.add_testbench(feeder)
        sim.add_testbench(collector)
        if vcd:
            with sim.write_vcd(vcd):
                sim.run()
        else:
            sim.run()
        return results[0]


class _Port(StreamPort):
    """The array's streams in an Amaranth testbench (one per process: `ctx` is its own)."""

    def __init__(self, sim: AmaranthArraySim, ctx, reset):
        self.sim, self.ctx, self.reset_signal = sim, ctx, reset
        self.cycle = 0

    def _stream(self, name):
        return getattr(self.sim.dut, name)

    async def tick(self):
        await self.ctx.tick()
        self.cycle += 1

    async def put(self, stream, value):
        ctx, bus = self.ctx, self._stream(stream)
        while self.sim.rng.random() < self.sim.idle:
            await self.tick()
        ctx.set(bus.valid, 1)
        ctx.set(Value.cast(bus.payload), value)
        await ctx.tick().until(bus.ready)
        ctx.set(bus.valid, 0)

    async def get(self, stream):
        ctx, bus = self.ctx, self._stream(stream)
        for _ in range(self.sim.timeout_cycles):
            ready = self.sim.rng.random() >= self.sim.stall
            ctx.set(bus.ready, ready)
            _, _, payload, valid = await ctx.tick().sample(Value.cast(bus.payload), bus.valid)
            self.cycle += 1
            if ready and valid:
                ctx.set(bus.ready, 0)
                return int(payload)
        raise TimeoutError(f"nothing on {stream} from the array within "
                           f"{self.sim.timeout_cycles} cycles")

    async def reset(self):
        self.ctx.set(self.sim.dut.inputs.valid, 0)
        self.ctx.set(self.reset_signal, 1)
        await self.tick()
        self.ctx.set(self.reset_signal, 0)

    def now(self):
        return self.cycle
