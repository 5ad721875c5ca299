"""`cellsp bench transport`: inputs per second end to end over the compiled Verilator link
(driver, pipe, protocol engine, array), and the share of the model's cycles the protocol takes
compared with the array's own cycles per step (the raw simulation).

The array's own cycles per step are `cycles_per_input` (learning or inference steps, streamed back
to back).
The `cycles` a STEP reply carries are the step's latency: with requests in flight the next
input waits in the array's shadow plane behind the step before, so they are not its cost."""

from __future__ import annotations

import time

import numpy as np

__all__ = ["bench_transport", "transport_configs"]


def transport_configs():
    """(name, config, cells per PE) measured by default."""
    from cellsp.sim import SPConfig
    from cellsp.sim.bench_hdl import SIXTEEN

    # 16x16 cells at P = 2: with the overlapped engine the array's step is the whole cost, and
    # fewer cells per PE cost fewer instructions a step (callgrind on 200 replayed learning
    # steps: 4.8 M at P = 2, 5.0 M at P = 4, 5.8 M at P = 8; BENCHMARKS.md)
    return [("16x16 cells, 16x16 input, r=3, P=2", SIXTEEN, 2),
            ("32x32 cells, 16x16 input, r=3 (default), P=16", SPConfig(), 16)]


def bench_transport(configs=None, steps: int = 500, rounds: int = 1, progress=print) -> dict:
    """Each config: `rounds` times `steps` learning then `steps` inference inputs through one
    driver (the state goes on learning). The figures are the fastest round's; every round's
    inputs/s is listed too, because a shared machine's speed can swing between runs minutes
    apart."""
    if rounds < 1 or steps < 1:
        raise ValueError(f"bench transport needs at least 1 round of at least 1 step (got "
                         f"{rounds} rounds of {steps} steps)")
    from cellsp.boards.boards import cycles_per_input
    from cellsp.hdl.geometry import ArrayGeometry
    from cellsp.sim import GoldenModel
    from cellsp.sim.bench import machine_info

    from .targets import LinkTransport, verilator_link
    from .driver import Driver

    rows = []
    for name, cfg, per_pe in configs or transport_configs():
        geometry = ArrayGeometry.for_config(cfg, cells_per_pe=per_pe)
        link = verilator_link(geometry, log=progress)
        t0 = time.perf_counter()
        link.open()
        build_s = time.perf_counter() - t0
        driver = Driver(LinkTransport(link), geometry, timeout=10.0)
        driver.load_state(GoldenModel(cfg).state())
        X = np.random.default_rng(0).random((2 * steps,) + tuple(cfg.input_shape)) < 0.3
        row = {"config": name, "cells": cfg.num_cells, "cells_per_pe": per_pe,
               "open_seconds (build or cache)": round(build_s, 1)}
        runs = {True: [], False: []}
        for _ in range(rounds):
            for learn, part in ((True, X[:steps]), (False, X[steps:])):
                c0 = link.cycles()
                t0 = time.perf_counter()
                _, cycles = driver.run(part, learn=learn, window=8)
                runs[learn].append((time.perf_counter() - t0, (link.cycles() - c0) / len(part),
                                    cycles))
                if progress and rounds > 1:
                    progress(f"  {name}, round {len(runs[learn])}, "
                             f"{'learning' if learn else 'inference'}: "
                             f"{len(part) / runs[learn][-1][0]:,.1f} inputs/s")
        for learn, part in ((True, X[:steps]), (False, X[steps:])):
            seconds, link_cycles, cycles = min(runs[learn], key=lambda run: run[0])
            key = "learning" if learn else "inference"
            array_cycles = cycles_per_input(geometry, learn=learn)
            row[key] = {
                "inputs_per_s": round(len(part) / seconds, 1),
                "model_cycles_per_input": round(link_cycles, 1),
                "array_cycles_per_step": array_cycles,
                "step_latency_cycles": round(float(np.mean(cycles)), 1),
                "protocol_share_of_cycles": round(1 - array_cycles / link_cycles, 3),
                "model_cycles_per_s": round(link_cycles * len(part) / seconds),
                "raw_simulation_inputs_per_s": round(link_cycles * len(part) / seconds
                                                     / array_cycles, 1),
                "inputs_per_s_each_round": [round(len(part) / run[0], 1) for run in runs[learn]]}
            if progress:
                r = row[key]
                best = f" (the fastest of {rounds} rounds)" if rounds > 1 else ""
                progress(f"  {name}, {key}: {r['inputs_per_s']:,} inputs/s end to end{best}; "
                         f"{r['model_cycles_per_input']:.0f} model cycles per input, of which "
                         f"the array's {key} step {r['array_cycles_per_step']:.0f} (protocol "
                         f"{r['protocol_share_of_cycles']:.0%}); model "
                         f"{r['model_cycles_per_s']:,} cycles/s, so the raw simulation would "
                         f"do {r['raw_simulation_inputs_per_s']:,} inputs/s")
        driver.close()
        rows.append(row)
    return {"benchmark": "transport", "machine": machine_info(), "steps": steps, "rounds": rounds,
            "results": rows, "target": ">= 2,000 inputs/s at 16x16 cells"}
