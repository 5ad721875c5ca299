"""Run the Amaranth cell array in Amaranth's own simulator (no compiler needed; small arrays).

`AmaranthArraySim` drives the array's streams the way a host would: input beats, state loads
and read-backs, with optional random idle cycles on the inputs and back-pressure on the
outputs (`StreamPacing`), and returns what came out.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetSignal, Signal, Value
from amaranth.sim import Simulator

from cellsp.hdl.array import CellArray
from cellsp.sim.geometry import ArrayGeometry
from cellsp.host.array_run import Results, StreamPacing, StreamPort, collect, feed

__all__ = ["AmaranthArraySim"]


class AmaranthArraySim:
    """The cell array of `geometry` in Amaranth's simulator.

    idle: probability of an idle cycle before each input beat or state word;
    stall: probability of holding `ready` low on each output or read-back cycle;
    seed: the seed of that pattern (`StreamPacing`), drawn afresh for every run, so a run
    repeated (for instance to write its waveforms) meets the same pattern.
    """

    def __init__(self, geometry: ArrayGeometry, *, idle: float = 0.0, stall: float = 0.0,
                 seed: int = 0):
        StreamPacing(idle, stall, seed)  # reject impossible probabilities here, not mid-run
        self.geometry = geometry
        self.config = geometry.config
        self.dut = CellArray(geometry)
        self.idle, self.stall, self.seed = idle, stall, seed

    def run(self, operations: list, vcd: str | None = None) -> Results:
        """Run the operations (see `cellsp.host.array_run.Operation`); return Results.
        `vcd`: also write the waveforms to this path."""
        top = Module()
        top.submodules.array = self.dut
        reset = Signal()
        top.d.comb += ResetSignal().eq(reset)
        sim = Simulator(top)
        sim.add_clock(1e-8)
        pacing = StreamPacing(self.idle, self.stall, self.seed)
        collected, results = [0], []

        async def feeder(ctx):
            port = AmaranthStreamPort(self.dut, ctx, reset, pacing)
            await feed(port, self.geometry, operations, collected)

        async def collector(ctx):
            port = AmaranthStreamPort(self.dut, ctx, reset, pacing)
            results.append(await collect(port, self.geometry, operations, collected))

        sim.add_testbench(feeder)
        sim.add_testbench(collector)
        if vcd:
            with sim.write_vcd(vcd):
                sim.run()
        else:
            sim.run()
        return results[0]


class AmaranthStreamPort(StreamPort):
    """The array's streams in one Amaranth testbench process (`ctx` is that process's own;
    the feeding and the collecting process share `pacing`)."""

    def __init__(self, dut: CellArray, ctx, reset: Signal, pacing: StreamPacing):
        super().__init__(dut.geometry, pacing)
        self.dut, self.ctx, self.reset_signal = dut, ctx, reset
        self.cycle = 0

    async def tick(self):
        await self.ctx.tick()
        self.cycle += 1

    async def offer(self, stream, value):
        ctx, bus = self.ctx, getattr(self.dut, stream)
        ctx.set(bus.valid, 1)
        ctx.set(Value.cast(bus.payload), value)
        await ctx.tick().until(bus.ready)
        ctx.set(bus.valid, 0)

    async def sink_cycle(self, stream, ready):
        ctx, bus = self.ctx, getattr(self.dut, stream)
        ctx.set(bus.ready, ready)
        _, _, payload, valid = await ctx.tick().sample(Value.cast(bus.payload), bus.valid)
        self.cycle += 1
        if ready and valid:
            ctx.set(bus.ready, 0)
            return int(payload)
        return None

    async def reset(self):
        self.ctx.set(self.dut.inputs.valid, 0)
        self.ctx.set(self.reset_signal, 1)
        await self.tick()
        self.ctx.set(self.reset_signal, 0)

    def now(self):
        return self.cycle
