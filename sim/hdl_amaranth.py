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
                 idle: float = 0.0, stall: float = 0.0, seed: int = 0, cells_per_pe: int = 1):
        from cellsp.hdl.array import CellArray
        from cellsp.hdl.geometry import ArrayGeometry

        self.config = config
        self.geometry = ArrayGeometry.for_config(config, input_width, lanes, cells_per_pe)
        self.dut = CellArray(self.geometry)
        self.idle, self.stall = idle, stall
        self.rng = random.Random(seed)
        #: a collector that waits longer than this for a beat raises instead of hanging
        self.timeout_cycles = 20 * (self.geometry.state_words + 1000)

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

        async def get(ctx, stream, what):
            for _ in range(self.timeout_cycles):
                ready = self.rng.random() >= self.stall
                ctx.set(stream.ready, ready)
                _, _, payload, valid = await ctx.tick().sample(stream.payload, stream.valid)
                if ready and valid:
                    ctx.set(stream.ready, 0)
                    return payload
            raise TimeoutError(f"no {what} from the array within {self.timeout_cycles} cycles")

        # Two processes, like a host with a send and a receive side: the feeder sends inputs,
        # commands and state words back to back; the collector takes outputs and read-backs.
        # Commands, resets and loads wait until the collector has everything sent before them.
        tasks = [op.kind for op in operations if op.kind in ("step", "read")]
        done = [0]

        async def wait_collected(ctx, count):
            while done[0] < count:
                await ctx.tick()

        async def feeder(ctx):
            issued = 0
            for op in operations:
                if op.kind in ("step", "interrupt"):
                    if op.kind == "interrupt":
                        await wait_collected(ctx, issued)
                    x = check_inputs(cfg, op.x, batch=False)
                    for bits in input_beats(g, x):
                        await put(ctx, dut.inputs, None, bits=bits, learn=int(op.learn))
                    if op.kind == "interrupt":
                        await ctx.tick().repeat(op.ticks)
                        await pulse_reset(ctx)
                        continue
                    issued += 1
                elif op.kind == "load":
                    await wait_collected(ctx, issued)
                    await put(ctx, dut.command, 1)
                    for word in g.state_to_words(op.state):
                        await put(ctx, dut.state_in, word)
                elif op.kind == "read":
                    await wait_collected(ctx, issued)
                    await put(ctx, dut.command, 0)
                    issued += 1
                elif op.kind == "reset":
                    await wait_collected(ctx, issued)
                    await pulse_reset(ctx)
                else:
                    raise ValueError(f"unknown operation {op.kind!r}")

        async def pulse_reset(ctx):
            # a synchronous reset of the whole array, in the middle of whatever it did
            ctx.set(dut.inputs.valid, 0)
            ctx.set(reset, 1)
            await ctx.tick()
            ctx.set(reset, 0)

        async def collector(ctx):
            for task in tasks:
                if task == "step":
                    rows, cycles = [], 0
                    for _ in range(h):
                        payload = await get(ctx, dut.outputs, "output row")
                        rows.append([(int(payload.active) >> j) & 1 for j in range(w)])
                        cycles = int(payload.cycles)
                    results.steps.append(StepResult(np.array(rows, bool), cycles))
                else:
                    words = [int(await get(ctx, dut.state_out, "state word"))
                             for _ in range(g.state_words)]
                    results.states.append(g.words_to_state(words))
                done[0] += 1

        from amaranth.hdl import Module, ResetSignal, Signal

        top = Module()
        top.submodules.array = dut
        reset = Signal()
        top.d.comb += ResetSignal().eq(reset)
        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(feeder)
        sim.add_testbench(collector)
        if vcd:
            with sim.write_vcd(vcd):
                sim.run()
        else:
            sim.run()
        return results
