"""Run the Amaranth cell array in Amaranth's own simulator (no compiler needed; small arrays).

`AmaranthArraySim` drives the array's streams the way a host would: input beats, state loads
and read-backs, with optional random idle cycles on the inputs and back-pressure on the
outputs, and returns what came out.
"""

from __future__ import annotations

import random

import numpy as np

from .config import SPConfig
from .golden import check_inputs
from .hdl_run import Results, StepResult, input_beats

__all__ = ["AmaranthArraySim"]


class AmaranthArraySim:
    """The cell array in Amaranth's simulator.

    idle: probability of an idle cycle before each input beat or state word;
    stall: probability of holding `ready` low on each output or read-back cycle.
    """

    def __init__(self, config: SPConfig, input_width: int | None = None, lanes: int = 4,
                 idle: float = 0.0, stall: float = 0.0, seed: int = 0):
        from cellsp.hdl.array import CellArray
        from cellsp.hdl.geometry import ArrayGeometry

        self.config = config
        if input_width is None:
            input_width = config.input_shape[1]
        self.geometry = ArrayGeometry(config, input_width=input_width, lanes=min(lanes, config.num_cells))
        self.dut = CellArray(self.geometry)
        self.idle, self.stall = idle, stall
        self.rng = random.Random(seed)

    def run(self, operations: list, vcd: str | None = None) -> Results:
        from amaranth.sim import Simulator

        dut, g = self.dut, self.geometry
        results = Results()
        cfg = self.config
        h, w = cfg.cell_shape

        async def pause(ctx, p):
            while self.rng.random() < p:
                await ctx.tick()

        async def put(ctx, stream, value, **fields):
            await pause(ctx, self.idle)
            ctx.set(stream.valid, 1)
            if fields:
                for name, v in fields.items():
                    ctx.set(getattr(stream.payload, name), v)
            else:
                ctx.set(stream.payload, value)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

        async def get(ctx, stream):
            while True:
                ready = self.rng.random() >= self.stall
                ctx.set(stream.ready, ready)
                _, _, payload, valid = await ctx.tick().sample(stream.payload, stream.valid)
                if ready and valid:
                    ctx.set(stream.ready, 0)
                    return payload

        async def testbench(ctx):
            for op in operations:
                if op.kind in ("step", "interrupt"):
                    x = check_inputs(cfg, op.x, batch=False)
                    for bits in input_beats(g, x):
                        await put(ctx, dut.inputs, None, bits=bits, learn=int(op.learn))
                    if op.kind == "interrupt":
                        await ctx.tick().repeat(op.ticks)
                        ctx.set(reset, 1)
                        await ctx.tick()
                        ctx.set(reset, 0)
                        continue
                    rows, cycles = [], 0
                    for _ in range(h):
                        payload = await get(ctx, dut.outputs)
                        rows.append([(int(payload.active) >> j) & 1 for j in range(w)])
                        cycles = int(payload.cycles)
                    results.steps.append(StepResult(np.array(rows, bool), cycles))
                elif op.kind == "load":
                    await put(ctx, dut.command, 1)
                    for word in g.state_to_words(op.state):
                        await put(ctx, dut.state_in, word)
                elif op.kind == "read":
                    await put(ctx, dut.command, 0)
                    words = [int(await get(ctx, dut.state_out)) for _ in range(g.state_words)]
                    results.states.append(g.words_to_state(words))
                elif op.kind == "reset":
                    ctx.set(dut.inputs.valid, 0)
                    # a synchronous reset of the whole array, in the middle of whatever it did
                    ctx.set(reset, 1)
                    await ctx.tick()
                    ctx.set(reset, 0)
                else:
                    raise ValueError(f"unknown operation {op.kind!r}")

        from amaranth.hdl import Module, ResetSignal, Signal

        top = Module()
        top.submodules.array = dut
        reset = Signal()
        top.d.comb += ResetSignal().eq(reset)
        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        if vcd:
            with sim.write_vcd(vcd):
                sim.run()
        else:
            sim.run()
        return results
