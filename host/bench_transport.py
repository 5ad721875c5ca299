"""`cellsp bench transport`: inputs per second end to end over the compiled Verilator link
(driver, pipe, protocol engine, array), and the share of the model's cycles the protocol takes
compared with the array's own cycles per step (the raw simulation).

The array's own cycles per step are `cycles_per_input` (learning or inference steps, streamed back
to back).
The `cycles` a STEP reply carries are the step's latency: with requests in flight the next
input waits in the array's shadow plane behind the step before, so they are not its cost.

Learning without the output maps (`Driver.run(outputs=False)`: BATCH requests, protocol 3) is
measured too, with the bytes each mode puts on the link per step and the rate a UART of a
given baud carries (`link_rates`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cellsp.boards.fit import cycles_per_input
from cellsp.sim import GoldenModel, SPConfig, processes
from cellsp.sim.bench import machine_info
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout

from .bench_array import SIXTEEN
from .driver import Driver
from .targets import LinkTransport, verilator_link

__all__ = ["bench_transport", "transport_configs", "model_instructions", "link_rates"]

#: learning and inference steps replayed under callgrind for `instructions=True`
INSTRUCTION_STEPS = 100


def transport_configs():
    """(name, config, cells per PE, count-parallel) measured by default."""
    # the count-parallel array at 16x16 cells: P = 16 (a row a PE) costs the fewest
    # instructions an input (callgrind, 100 replayed learning steps, before the engine's last
    # changes: 4.25 M at P = 4, 2.95 M at P = 8, 2.41 M at P = 16, 2.78 M at P = 32; 2.18 M at
    # P = 16 with them); the serial array (the boards') at its best
    # P for comparison (4.65 M at P = 2; BENCHMARKS.md). The default config on both arrays at
    # P = 16: the count-parallel model compiles in about 4 minutes there (at P = 32 it had not
    # after 14) and takes 12.5 M instructions a learning input against the serial one's 21.9 M
    return [("16x16 cells, 16x16 input, r=3, count-parallel, P=16", SIXTEEN, 16, True),
            ("16x16 cells, 16x16 input, r=3, serial, P=2", SIXTEEN, 2, False),
            ("32x32 cells, 16x16 input, r=3 (default), count-parallel, P=16", SPConfig(), 16,
             True),
            ("32x32 cells, 16x16 input, r=3 (default), serial, P=16", SPConfig(), 16, False)]


class _Recording:
    """A driver transport that keeps a copy of every byte written to it."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = bytearray()

    def write(self, data: bytes) -> None:
        self.sent += data
        self.inner.write(data)

    def read(self, timeout: float) -> bytes:
        return self.inner.read(timeout)

    def close(self) -> None:
        self.inner.close()


def _need_valgrind() -> None:
    if shutil.which("valgrind") is None:
        raise ValueError("counting instructions needs valgrind (its callgrind tool) on PATH: "
                         "install it (e.g. `apt install valgrind`) or leave out --instructions")


def _callgrind(binary: Path, stream: bytes) -> int:
    """Instructions the model binary executes on `stream` (its stdin), counted by callgrind."""
    with tempfile.TemporaryDirectory(prefix="cellsp-callgrind-") as tmp:
        source = Path(tmp) / "stream.bin"
        source.write_bytes(stream)
        with open(source, "rb") as stdin:
            done = processes.run(["valgrind", "--tool=callgrind",
                                  f"--callgrind-out-file={Path(tmp) / 'out'}", str(binary)],
                                 stdin=stdin, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    found = re.search(r"refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"callgrind on {binary} failed (exit code {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return int(found.group(1).replace(",", ""))


def model_instructions(link, geometry, steps: int = INSTRUCTION_STEPS, progress=None) -> dict:
    """Machine-independent cost of a step: the instructions the compiled model executes per
    learning and per inference input (callgrind, the model binary alone: no driver, no pipe).

    A driver's bytes are recorded (connect, a state load, `steps` learning then `steps`
    inference inputs) and replayed to the binary from a file three times, cut after the load,
    after the learning steps and at the end; the differences divided by `steps` are the figures.
    Startup, the load and the drain cancel out."""
    _need_valgrind()
    cfg = geometry.config
    recording = _Recording(LinkTransport(link))
    driver = Driver(recording, geometry, timeout=10.0)
    driver.load_state(GoldenModel(cfg).state())
    cuts = [len(recording.sent)]
    X = np.random.default_rng(1).random((2 * steps,) + tuple(cfg.input_shape)) < 0.3
    for learn, part in ((True, X[:steps]), (False, X[steps:])):
        driver.run(part, learn=learn, window=8)
        cuts.append(len(recording.sent))
    if driver.retried:
        raise RuntimeError(f"the recorded stream holds {driver.retried} resent requests; "
                           "run again on a less loaded machine")
    counts = []
    for cut in cuts:
        if progress:
            progress(f"  callgrind: replaying {cut:,} bytes ...")
        counts.append(_callgrind(link.build(), bytes(recording.sent[:cut])))
    version = processes.run(["valgrind", "--version"], capture_output=True, text=True).stdout
    return {"steps": steps, "tool": version.strip(),
            "learning": round((counts[1] - counts[0]) / steps),
            "inference": round((counts[2] - counts[1]) / steps)}


def link_rates(geometry, baud: int = 3_000_000) -> dict:
    """Bytes a step puts on the link each way, and the steps a second a UART at `baud` (10
    bits a byte, full duplex: the busier direction bounds it) carries: a STEP a step (its reply
    carries the map), and full BATCH requests (one reply for `batch_steps` steps)."""
    lay = ProtocolLayout.for_geometry(geometry)
    frame = HEADER + TRAILER
    k = max(1, lay.batch_steps)
    modes = {"step": (frame + lay.step_request, frame + lay.step_reply),
             "batch": ((frame + lay.batch_request(k)) / k, (frame + lay.batch_reply) / k)}
    return {name: {"bytes_to_device": round(up, 2), "bytes_from_device": round(down, 2),
                   "uart_steps_per_s": round(baud / 10 / max(up, down))}
            for name, (up, down) in modes.items()} | {"baud": baud, "batch_steps": k}


def bench_transport(configs=None, steps: int = 500, rounds: int = 1, progress=None,
                    instructions: bool = False) -> dict:
    """Each config: `rounds` times `steps` learning then `steps` inference inputs through one
    driver (the state goes on learning). The figures are the fastest round's; every round's
    inputs/s is listed too, because a shared machine's speed can swing between runs minutes
    apart. With `instructions`, also the model's instructions per input
    (`model_instructions`), which do not depend on the machine or its load. `progress(line)`
    hears each figure as it is measured."""
    if rounds < 1 or steps < 1:
        raise ValueError(f"bench transport needs at least 1 round of at least 1 step (got "
                         f"{rounds} rounds of {steps} steps)")
    if instructions:
        _need_valgrind()
    rows = []
    for name, cfg, per_pe, *parallel in configs or transport_configs():
        geometry = ArrayGeometry.for_config(cfg, cells_per_pe=per_pe,
                                            parallel_count=bool(parallel and parallel[0]))
        link = verilator_link(geometry)
        t0 = time.perf_counter()
        link.open()
        build_s = time.perf_counter() - t0
        driver = Driver(LinkTransport(link), geometry, timeout=10.0)
        driver.load_state(GoldenModel(cfg).state())
        X = np.random.default_rng(0).random((2 * steps,) + tuple(cfg.input_shape)) < 0.3
        row = {"config": name, "cells": cfg.num_cells, "cells_per_pe": per_pe,
               "parallel_count": geometry.parallel_count,
               "open_seconds (build or cache)": round(build_s, 1)}
        runs = {True: [], False: []}
        quiet = []                     # learning without the maps: seconds a round
        for _ in range(rounds):
            part = X[:steps]
            t0 = time.perf_counter()
            driver.run(part, learn=True, outputs=False, window=8)
            quiet.append(time.perf_counter() - t0)
            if progress and rounds > 1:
                progress(f"  {name}, round {len(quiet)}, learning without maps: "
                         f"{len(part) / quiet[-1]:,.1f} inputs/s")
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
        row["learning_without_outputs"] = {
            "inputs_per_s": round(steps / min(quiet), 1),
            "inputs_per_s_each_round": [round(steps / q, 1) for q in quiet],
            "batch_steps": driver.batch_steps}
        row["link"] = link_rates(geometry)
        if progress:
            r, rates = row["learning_without_outputs"], row["link"]
            progress(f"  {name}, learning without the maps (8 BATCHes of {r['batch_steps']} in "
                     f"flight): "
                     f"{r['inputs_per_s']:,} inputs/s end to end; on a "
                     f"{rates['baud'] / 1e6:g} Mbaud UART "
                     f"{rates['batch']['uart_steps_per_s']:,} steps/s "
                     f"({rates['batch']['bytes_to_device']} bytes a step to the device) against "
                     f"{rates['step']['uart_steps_per_s']:,} with the maps "
                     f"({rates['step']['bytes_from_device']} bytes a step back)")
        if instructions:
            row["instructions_per_input"] = counted = model_instructions(
                link, geometry, progress=progress)
            if progress:
                progress(f"  {name}: {counted['learning'] / 1e6:.2f} M instructions per "
                         f"learning input, {counted['inference'] / 1e6:.2f} M per inference "
                         f"input (callgrind, {counted['steps']} of each replayed to the model)")
        driver.close()
        rows.append(row)
    return {"benchmark": "transport", "machine": machine_info(), "steps": steps, "rounds": rounds,
            "results": rows, "target": ">= 2,000 inputs/s at 16x16 cells"}
