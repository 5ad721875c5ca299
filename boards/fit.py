"""Whether a config fits a board, and how fast a build of it runs, before any synthesis.

`estimate(board, config, cells_per_pe)` predicts the resources of a build from coefficients
fitted to measured builds, so that a config that cannot fit is refused at once (`check_fit`
raises `FitError` naming the resource, the need and what the device has). `cycles_per_input`
and `uart_inputs_per_s` are the throughput of the array and of the board's UART.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cellsp.hdl.pe import ProcessingElement
from cellsp.hdl.pe import ring_storage as pe_ring_storage
from cellsp.hdl.top import rx_fifo_depth
from cellsp.sim.config import SPConfig
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout

from .boards import Board

__all__ = ["Estimate", "FitError", "estimate", "check_fit", "cycles_per_input",
           "uart_inputs_per_s", "block_ram_count", "ring_storage"]


# ---------------------------------------------------------------------------- throughput

def cycles_per_input(geometry, learn: bool = True) -> int:
    """Cycles per input of a learning step (`learn`) after a learning step, or of an inference
    step after an inference step, streamed back to back.

    Each of the P cells of a PE takes R + N + 2 cycles (R = `NEIGHBOURHOOD_LATENCY` for the
    registered neighbourhood results, then N window slots plus the read latency and the
    registered count; N = `scan_steps`, the window rows under `row_scan`), or R + the boost
    table's try cycles (`boost_try_cycles`) when longer and the step before learned (the new
    boost thresholds are tried during the slot), or R + B when the boost product's
    B steps are longer still (tiny windows); then P cycles of inhibition, P of
    duty cycles when learning, and 10 fixed. Fitted to the Verilator measurements in
    BENCHMARKS.md, learning / inference: 64 / 63 (P=1), 442 / 434 (P=8) with 49-slot windows,
    298 / 242 (P=8, 25 slots, 33 boost entries) reproduced exactly, and 1,928 / 1,864 for one
    band PE of 64 cells (1,930 / 1,866 here).
    """
    cfg = geometry.config
    p = geometry.cells_per_pe
    if geometry.parallel_count:
        # 1 to take the input, N + 1 to scan (at least P: the new boosts after a learning
        # step), 1 for the products, P to inhibit (and update the duties), 1 to publish
        return max(geometry.beats_per_input, p + max(geometry.scan_steps, p - 1) + 4)
    slot = ProcessingElement.NEIGHBOURHOOD_LATENCY + max(
        geometry.scan_steps + 2, cfg.boost_bits, geometry.boost_try_cycles if learn else 0)
    return max(geometry.beats_per_input, p * (slot + (2 if learn else 1)) + 10)


def uart_inputs_per_s(geometry, baud: int) -> dict:
    """Inputs per second the UART carries for STEP requests at `baud` (10 bits a byte):
    `round_trip` sends each request after the previous reply (request + reply bytes a step);
    `pipelined` overlaps them (`cellsp run` keeps up to 8 in flight) so only the longer
    direction counts."""
    lay = ProtocolLayout.for_geometry(geometry)
    frame = HEADER + TRAILER
    request, reply = frame + lay.step_request, frame + lay.step_reply
    return {"step_request_bytes": request, "step_reply_bytes": reply,
            "round_trip": round(baud / 10 / (request + reply), 1),
            "pipelined": round(baud / 10 / max(request, reply), 1)}


# ---------------------------------------------------------------------------- the estimate

def block_ram_count(family: str, width: int, depth: int) -> int:
    """Block RAMs Yosys uses for a `width` x `depth` memory: the cheapest of the block's
    aspect ratios (iCE40 SB_RAM40_4K: 256x16 .. 2048x2; ECP5 DP16KD: 512x36 .. 16384x1)."""
    shapes = {"ice40": [(16, 256), (8, 512), (4, 1024), (2, 2048)],
              "ecp5": [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]}
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in shapes[family])


def ring_storage(geometry) -> tuple[int, list[tuple[int, int]]]:
    """(flip-flop bits, memories (width, depth)) of all the PEs' rings (hdl/pe.py)."""
    size = len(geometry.pe_cells(0))              # every PE has the same rings
    bits, runs = pe_ring_storage(geometry.config, size, geometry.ring_positions,
                                 geometry.ring_memory_min)
    return bits * geometry.num_pes, runs * geometry.num_pes


def _memories(geometry, fifo_depth: int, ring_runs) -> list[tuple[int, int]]:
    """(width, depth) of every memory of a board build: per group of `lanes` PEs a permanence
    memory and a pool memory of `fields` entries a word (hdl/array_base.py; the count-parallel
    array: per PE, its P cells side by side, one word per scan step), the ring runs kept in
    memory (`ring_runs`, from `ring_storage`), the protocol engine's receive buffer
    (hdl/frame_receiver.py), reply cache and chunk buffer (hdl/protocol.py), and the board's
    receive FIFO (hdl/top.py)."""
    cfg = geometry.config
    lay = ProtocolLayout.for_geometry(geometry)
    mems = []
    if geometry.parallel_count:
        p, depth = geometry.cells_per_pe, geometry.scan_steps + 1
        for _ in range(geometry.num_pes):
            mems += [(p * cfg.perm_bits, depth), (2 * p, depth)]
    for _ in range(0 if geometry.parallel_count else geometry.memories):
        depth = geometry.memory_depth
        mems += [(geometry.fields * cfg.perm_bits, depth), (2 * geometry.fields, depth)]
    mems += ring_runs
    stride = 1 << (lay.step_reply - 1).bit_length()     # a cache slot, as hdl/frames.py has it
    mems += [(8, lay.max_payload), (8, lay.reply_window * stride), (8, lay.chunk_bytes),
             (16, lay.reply_window), (8, fifo_depth)]
    return mems


# Coefficients: logic and flip-flops of a whole board build (UART, FIFO, protocol engine and
# array) as  a * PEs + b * cells + c * input bits + d,  fitted to builds measured on 2026-11-27
# (`cellsp build` / `cellsp bench boards`; BENCHMARKS.md, "Board capacity"). Logic is what
# nextpnr places: iCE40 logic cells, ECP5 TRELLIS_COMB (a LUT4, or half a carry cell).
# iCE40UP5K, 8x8 input, r=2 (logic cells / flip-flops): 1x4 cells P=4 3,544 / 1,173;
#   2x8 P=8 4,745 / 1,790; 3x3 P=3 5,030 / 1,504; 4x4 P=4 6,227 / 1,885; 2x12 P=12
#   5,135 / 2,168. Least squares, within 2% of each. All have 64 input bits: the input terms
#   are the ECP5 fit's (0.5 LUT and 2.6 flip-flops a bit; an iCE40 logic cell holds both).
# LFE5U-85F, 16x16 input, r=3 (TRELLIS_COMB / TRELLIS_FF): 1x4 cells P=4 (8x8 input, r=2)
#   3,380 / 1,137; 8x8 P=8 10,195 / 4,776; 16x16 P=16 16,660 / 14,249; 32x32 P=16
#   60,684 / 52,758. Logic: least squares over PEs and input bits (an ECP5 PE's rings are
#   flip-flops that need no LUT), within 4%; flip-flops: exact through the four.
# iCE40 logic cells include the flip-flops that cannot share a cell with a LUT (each PE ring
# entry is fed by another flip-flop): that is why a cell costs 48 logic cells there.
# Every fitted build had 46 ring bits a cell in flip-flops, so "cells" is counted as ring
# flip-flop bits / 46 (`ring_storage`: a narrower config or rings in memory need fewer).
# Protocol 2 (2026-12-03) added what it costs in the smallest builds to the fixed terms:
# iCE40 +347 logic cells and +89 flip-flops, ECP5 +410 LUTs and +66 flip-flops.
COEFFICIENTS = {
    # family: {"logic": (per PE, per cell, per input bit, fixed), "ffs": (...)}
    "ice40": {"logic": (696.1, 47.7, 3.1, 2409.4 + 347), "ffs": (47.6, 47.4, 2.63, 767.3 + 89)},
    "ecp5": {"logic": (907.0, 0.0, 0.5, 2439.4 + 410), "ffs": (38.56, 47.73, 2.63, 739.1 + 66)},
}
FITTED_RING_BITS = 46
# A PE serving a band of rows (`ArrayGeometry.separable` False) adds logic that the fits above
# did not see: per-cell constants chosen among more cells, all 8 neighbours' duties. Measured
# once, on the iCEBreaker's default (8x8 cells, one PE of 64, 25-slot windows, 8-bit duties,
# ring runs in memory): 4,670 logic cells against 3,961 from the coefficients above.
# (ECP5: the same figure, not measured there.)
BAND_PE_LOGIC = {"ice40": 709, "ecp5": 709}
# ECP5 memories of at most 128 words go to LUT RAM (TRELLIS_DPR16X4, 16 words of 4 bits):
# TRELLIS_COMB a block, with its read multiplexers, and flip-flops a ring run in memory (its
# pointer, prefetched entry, write data), beyond the fits above. Fitted to one build
# (2026-12-03): the ULX3S's 32x64 cells at P = 64 (128 ring runs, 1,668 blocks) placed
# 52,154 TRELLIS_COMB and 17,063 flip-flops against 32,129 and 11,753 without these terms.
LUT_RAM_LOGIC = 12.0
RING_RUN_FFS = 41.5


@dataclass
class Estimate:
    """Predicted resources of a board build (see COEFFICIENTS) and the cycles per input."""

    logic: int
    ffs: int
    bram: int
    cycles_per_input: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The figures a build report keeps beside its measurements."""
        return {"logic": self.logic, "ffs": self.ffs, "bram": self.bram,
                "cycles_per_input": self.cycles_per_input}


class FitError(ValueError):
    """A config cannot fit a board; the message names the resource, the need and the supply."""


#: logic units and flip-flops a row-wide PE adds per synapse path and per boost try beyond the
#: first: fitted to one build, the ECPIX-5's 32x32-rows (32 PEs of 7 synapse paths and 4 tries:
#: 49,131 TRELLIS_COMB and 58,171 flip-flops placed, 2026-12-04, against 32,049 and 51,588
#: the serial array's fit gives), the tries' share guessed
ROW_SCAN_SYNAPSE_LOGIC = 80
ROW_SCAN_TRY_LOGIC = 20
ROW_SCAN_SYNAPSE_FFS = 34


def estimate(board: Board, config: SPConfig, cells_per_pe: int,
             parallel_count: bool = False) -> Estimate:
    """Resources a build of `config` at `cells_per_pe` on `board` should need (no synthesis);
    `parallel_count`: of the count-parallel array (its extra synapse paths and multipliers
    are not in the fitted logic: a lower bound, and said in the notes)."""
    geometry = board.geometry(config, cells_per_pe, parallel_count=parallel_count)
    family = board.device.family
    ring_bits, ring_runs = ring_storage(geometry)
    terms = (geometry.num_pes, ring_bits / FITTED_RING_BITS, config.num_inputs, 1)
    coef = COEFFICIENTS[family]
    logic = sum(a * t for a, t in zip(coef["logic"], terms))
    if not geometry.separable:
        logic += BAND_PE_LOGIC[family] * geometry.num_pes
    logic = round(logic)
    ffs = round(sum(a * t for a, t in zip(coef["ffs"], terms)))
    # Yosys puts shallow memories into ECP5 LUT RAM instead (seen in the ULX3S build of 1x4
    # cells: depth 96 and 100 went to TRELLIS_DPR16X4, 130 to DP16KD; with protocol 2 the
    # 128-deep reply cache went to LUT RAM too)
    memories = _memories(geometry, rx_fifo_depth(geometry), ring_runs)
    bram = sum(block_ram_count(family, w, d) for w, d in memories
               if family == "ice40" or d > 128)
    if family == "ecp5":
        # LUT RAM costs logic, and each ring run in memory flip-flops (see LUT_RAM_LOGIC)
        blocks = sum(math.ceil(w / 4) * math.ceil(d / 16) for w, d in memories if d <= 128)
        logic += round(LUT_RAM_LOGIC * blocks)
        ffs += round(RING_RUN_FFS * len(ring_runs))
    notes = []
    if geometry.row_scan:
        # each PE's extra synapse paths (learning add, clamp, connected test, the count's
        # adder tree, the hit registers) and extra boost comparators
        paths = (geometry.scan_width - 1) * geometry.num_pes
        logic += round(ROW_SCAN_SYNAPSE_LOGIC * paths + ROW_SCAN_TRY_LOGIC
                       * (geometry.boost_tries_per_cycle - 1) * geometry.num_pes)
        ffs += round(ROW_SCAN_SYNAPSE_FFS * paths)
        notes.append(f"row-wide: the serial array's fit plus {ROW_SCAN_SYNAPSE_LOGIC} logic "
                     f"units and {ROW_SCAN_SYNAPSE_FFS} flip-flops per extra synapse path, "
                     f"{ROW_SCAN_TRY_LOGIC} logic units per extra boost try (fitted to one "
                     f"ECP5 build)")
    if parallel_count:
        notes.append("count-parallel: the logic is the serial array's fit, without the P "
                     "synapse paths and multipliers a PE adds (not fitted)")
    return Estimate(logic, ffs, bram, cycles_per_input(geometry), notes)


def check_fit(board: Board, config: SPConfig, cells_per_pe: int,
              parallel_count: bool = False) -> Estimate:
    """The estimate, or `FitError` for the first resource the device does not have enough of."""
    est = estimate(board, config, cells_per_pe, parallel_count)
    dev = board.device
    h, w = config.cell_shape
    what = f"{h}x{w} cells at {cells_per_pe} cells per PE"
    for name, need, total in [(dev.logic_name, est.logic, dev.logic),
                              ("flip-flops", est.ffs, dev.ffs),
                              (dev.bram_name, est.bram, dev.bram)]:
        if need > total:
            raise FitError(
                f"{what} cannot fit the {board.name} ({dev.part}): it needs about {need:,} "
                f"{name} and the device has {total:,}; use fewer cells, a larger "
                f"cells_per_pe, or a larger board (`cellsp boards` lists them)")
    return est
