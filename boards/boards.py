"""The open FPGA boards cellsp builds for, what each device holds, and whether a config fits.

A `Board` names its amaranth-boards platform, its oscillator, the UART bridge's baud rate, the
command that programs it and the default array for it (the largest that met timing there, from
`cellsp bench boards`). `estimate(board, config, cells_per_pe)` predicts the resources of a
build before any synthesis, from coefficients fitted to measured builds, so that a config that
cannot fit is refused at once (`FitError` names the resource, the need and what the device has).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field

from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout
from cellsp.sim.config import SPConfig

__all__ = ["Device", "Board", "BOARDS", "get_board", "Estimate", "FitError", "estimate",
           "check_fit", "cycles_per_input", "uart_inputs_per_s", "block_ram_count",
           "SMALL_CONFIG"]


@dataclass(frozen=True)
class Device:
    """What one FPGA holds. `logic` counts the unit nextpnr places logic into: iCE40 logic cells
    (a LUT4 and a flip-flop each) or ECP5 LUT4s. `bram` counts block RAMs: iCE40 SB_RAM40_4K
    (4 kbit) or ECP5 DP16KD (18 kbit). `dsp`: iCE40 SB_MAC16 or ECP5 MULT18X18D."""

    family: str                  # "ice40" or "ecp5"
    part: str                    # the amaranth platform's device name
    logic: int
    ffs: int
    bram: int
    spram: int = 0               # iCE40UP 256 kbit single-port RAMs
    dsp: int = 0

    @property
    def logic_name(self) -> str:
        return "logic cells" if self.family == "ice40" else "LUT4s"

    @property
    def bram_name(self) -> str:
        return "EBR (SB_RAM40_4K)" if self.family == "ice40" else "EBR (DP16KD)"


# Device sizes from the Lattice data sheets (iCE40 UltraPlus DS FPGA-DS-02008, ECP5 DS1044);
# they are the totals nextpnr's --report gives as "available" for the same bel types.
ICE40UP5K = Device("ice40", "iCE40UP5K", logic=5280, ffs=5280, bram=30, spram=4, dsp=8)
LFE5U_85F = Device("ecp5", "LFE5U-85F", logic=83640, ffs=83640, bram=208, dsp=156)
LFE5UM5G_85F = Device("ecp5", "LFE5UM5G-85F", logic=83640, ffs=83640, bram=208, dsp=156)


@dataclass(frozen=True)
class Board:
    """One board: its platform, device, oscillator and UART, and how to program it.

    `platform_path` is "module:Class" in amaranth_boards (imported only when a build needs it).
    `baud` is the rate the gateware UART runs at: the fastest the USB bridge carries (the UART
    makes any rate with at least 4 clock cycles a bit exactly on average, a fractional number
    of cycles included: ``cellsp.hdl.uart.bit_period``). `program` is the
    programming command with ``{bitstream}`` for the file. `default_config` and
    `default_cells_per_pe` are the largest array that met timing here; `default_measured` says
    whether that came from a measured build (False: a conservative guess).
    """

    name: str
    description: str
    platform_path: str
    device: Device
    clock_hz: int
    baud: int
    uart_bridge: str
    program: tuple[str, ...]
    bitstream: str                    # the file `program` takes: "cellsp.bin" or "cellsp.bit"
    default_config: SPConfig
    default_cells_per_pe: int
    default_measured: bool = False
    notes: str = ""
    #: The oscillator, when the design runs on a PLL's clock (`clock_hz`) instead (ECP5 only).
    pll_from_hz: int | None = None
    #: `ArrayGeometry.ring_memory_min` of builds for this board (0: rings in flip-flops)
    ring_memory_min: int = 0

    def geometry(self, config: SPConfig, cells_per_pe: int):
        """The hardware layout of `config` in a build for this board."""
        from cellsp.sim.geometry import ArrayGeometry

        return ArrayGeometry.for_config(config, cells_per_pe=cells_per_pe,
                                        ring_memory_min=self.ring_memory_min)

    @property
    def oscillator_hz(self) -> int:
        return self.pll_from_hz or self.clock_hz

    def platform(self):
        """A new instance of the board's amaranth-boards platform."""
        import importlib

        module, cls = self.platform_path.split(":")
        return getattr(importlib.import_module(module), cls)()

    @property
    def programmer(self) -> str:
        return self.program[0]

    def program_command(self, bitstream_path: str) -> list[str]:
        return [part.replace("{bitstream}", str(bitstream_path)) for part in self.program]

    def programmer_found(self) -> bool:
        return shutil.which(self.programmer) is not None


#: The base of the arrays for small devices (iCE40UP5K): an 8x8 input, 25-slot windows (r=2).
SMALL_CONFIG = SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=2,
                        potential_pct=0.6, winners=2)
# A PE costs about 700 UP5K logic cells, and its rings 48 logic cells a cell in flip-flops, so
# the iCEBreaker's cells are one PE serving them all (a band of every row), its rings' long
# runs in block RAM (ring_memory_min=16), with 25 potential synapses a cell (r=2, every slot),
# 6-bit permanences, 8-bit duty cycles and 6-bit boosts. Measured (logic cells, EBR, MHz
# against 12): 8x8 cells 4,670 (88%), 12, 14.95; 10x10 5,012 (95%), 14, 14.55; 11x11 5,244
# (99.3%), 15, 14.47; 12x12 does not fit (5,284 logic cells). With the registered count
# (one cycle more per slot) 11x11 is 5,254 (99.5%), 15, 14.23. With the registered
# neighbourhood results, the fractional UART and a protocol engine that overlapped steps
# (session 6; that engine was reverted since) 11x11 needed 5,281 logic cells (one too many)
# and 10x10 5,199 (98.5%), 14 EBR, 16.58 MHz. Session 7 (that engine back, its sender fixed):
# 10x10 5,147 (97.5%), 14 EBR, 15.49 MHz. Protocol 2 (every reply echoes its request's check
# and carries the count of state changes) costs about 450 logic cells: 10x10 5,756 and 9x9
# 5,409 do not fit, 8x8 is 5,179 (98%), 13 EBR, 18.14 MHz (2026-12-03). Edge 'clip': under
# 'wrap' the band's neighbours sit at more ring positions.
ICEBREAKER_CONFIG = SMALL_CONFIG.replace(
    cell_shape=(8, 8), potential_pct=1.0, edge="clip", perm_bits=6, connected_threshold=32,
    perm_inc=3, perm_dec=1, perm_bump=2, init_spread=8, duty_bits=8, duty_period_log2=6,
    boost_bits=6, boost_frac_bits=3, boost_index_bits=3)

BOARDS: dict[str, Board] = {b.name: b for b in [
    Board(
        name="icebreaker",
        description="1BitSquared iCEBreaker (iCE40UP5K-SG48)",
        platform_path="amaranth_boards.icebreaker:ICEBreakerPlatform",
        device=ICE40UP5K, clock_hz=12_000_000,
        # FT2232H channel B; 12 MHz / 3 Mbaud is exactly 4 cycles a bit
        baud=3_000_000, uart_bridge="FT2232H",
        program=("iceprog", "{bitstream}"), bitstream="cellsp.bin",
        default_config=ICEBREAKER_CONFIG, default_cells_per_pe=64, default_measured=True,
        ring_memory_min=16,
    ),
    Board(
        name="ulx3s-85f",
        description="Radiona ULX3S with an LFE5U-85F (CABGA381, speed 6)",
        platform_path="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        device=LFE5U_85F, clock_hz=25_000_000,
        # The FT231X's fastest rate, 3 Mbaud (exact on its side: 3 MHz / 1): 25/3 = 8.33
        # cycles a bit, every bit edge within one cycle (40 ns) of its ideal time.
        baud=3_000_000, uart_bridge="FT231X",
        program=("openFPGALoader", "-b", "ulx3s", "{bitstream}"), bitstream="cellsp.bit",
        # measured: 32x32 cells (the default config) at P=32, a PE a row, meet 25 MHz (39.08
        # MHz routed with router2 on session 9's main; 36% of the LUTs, 62% of the flip-flops). At P=16 they took
        # 73% of the LUTs, placed at 24.6 MHz and did not finish routing; the UART carries
        # fewer inputs a second than either (BENCHMARKS.md, "Board capacity")
        default_config=SPConfig(), default_cells_per_pe=32,
        default_measured=True,
        notes="ULX3S platforms need openFPGALoader on PATH even to build: the build sets "
              "OPENFPGALOADER=true when it is missing",
    ),
    Board(
        name="ecpix5-85f",
        description="LambdaConcept ECPIX-5 with an LFE5UM5G-85F (CABGA554, speed 8)",
        platform_path="amaranth_boards.ecpix5:ECPIX585Platform",
        # The array cannot run at the 100 MHz oscillator (its learning path reached 31 MHz
        # at 8x8 cells on the ULX3S's slower speed grade): a PLL makes 30 MHz, which is
        # exactly 10 cycles a bit at 3 Mbaud (the FT2232H makes 3 Mbaud exactly).
        device=LFE5UM5G_85F, clock_hz=30_000_000, pll_from_hz=100_000_000,
        baud=3_000_000, uart_bridge="FT2232H",
        program=("openFPGALoader", "-b", "ecpix5", "{bitstream}"), bitstream="cellsp.bit",
        # measured: 16x16 cells at P=16 meet 30 MHz (56.45 MHz routed with the overlapped
        # engine, router2; 20% of the LUTs). 32x32 cells not built on this board yet
        default_config=SPConfig(cell_shape=(16, 16)), default_cells_per_pe=16,
        default_measured=True,
    ),
]}


def get_board(name: str) -> Board:
    """The board called `name`; a ValueError lists the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)} "
                         f"(`cellsp boards` lists them)") from None


# ---------------------------------------------------------------------------- throughput

def cycles_per_input(geometry, learn: bool = True) -> int:
    """Cycles per input of a learning step (`learn`) after a learning step, or of an inference
    step after an inference step, streamed back to back.

    Each of the P cells of a PE takes R + N + 2 cycles (R = `NEIGHBOURHOOD_LATENCY` for the
    registered neighbourhood results, then N window slots plus the read latency and the
    registered count), or R + the boost table's entries when longer and the step before learned
    (the new boost thresholds are tried during the slot); then P cycles of inhibition, P of
    duty cycles when learning, and 10 fixed. Fitted to the Verilator measurements in
    BENCHMARKS.md, learning / inference: 64 / 63 (P=1), 442 / 434 (P=8) with 49-slot windows,
    298 / 242 (P=8, 25 slots, 33 boost entries) reproduced exactly, and 1,928 / 1,864 for one
    band PE of 64 cells (1,930 / 1,866 here).
    """
    from cellsp.hdl.pe import ProcessingElement

    cfg = geometry.config
    p = geometry.cells_per_pe
    if geometry.parallel_count:
        # 1 to take the input, N + 1 to scan (at least P: the new boosts after a learning
        # step), 1 for the products, P to inhibit (and update the duties), 1 to publish
        return max(geometry.beats_per_input, p + max(geometry.scan_steps, p - 1) + 4)
    slot = ProcessingElement.NEIGHBOURHOOD_LATENCY + max(
        geometry.scan_steps + 2, len(cfg.boost_table) if learn else cfg.boost_bits + 1)
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
    from cellsp.hdl.array import CellArray

    pe = CellArray.make_pe(geometry, 0)          # every PE has the same rings
    pe._MustUse__silence = True                  # only asked, never elaborated
    bits, runs = pe.ring_storage()
    return bits * geometry.num_pes, runs * geometry.num_pes


def _memories(geometry, fifo_depth: int, ring_runs) -> list[tuple[int, int]]:
    """(width, depth) of every memory of a board build: per group of `lanes` PEs a permanence
    memory and a pool memory (hdl/array.py), the ring runs kept in memory (`ring_runs`, from
    `ring_storage`), the
    protocol engine's receive buffer, reply cache and chunk buffer (hdl/protocol.py), and the
    board's receive FIFO (hdl/top.py)."""
    cfg = geometry.config
    lay = ProtocolLayout.for_geometry(geometry)
    depth = geometry.memory_depth
    mems = []
    for _ in range(geometry.memories):
        mems += [(geometry.lanes * cfg.perm_bits, depth), (2 * geometry.lanes, depth)]
    mems += ring_runs
    stride = 1 << (lay.step_reply - 1).bit_length()     # a cache slot, as hdl/protocol.py has it
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


@dataclass
class Estimate:
    """Predicted resources of a board build (see COEFFICIENTS) and the cycles per input."""

    logic: int
    ffs: int
    bram: int
    cycles_per_input: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"logic": self.logic, "ffs": self.ffs, "bram": self.bram,
                "cycles_per_input": self.cycles_per_input}


class FitError(ValueError):
    """A config cannot fit a board; the message names the resource, the need and the supply."""


def estimate(board: Board, config: SPConfig, cells_per_pe: int) -> Estimate:
    """Resources a build of `config` at `cells_per_pe` on `board` should need (no synthesis)."""

    from .top import rx_fifo_depth

    geometry = board.geometry(config, cells_per_pe)
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
    bram = sum(block_ram_count(family, w, d)
               for w, d in _memories(geometry, rx_fifo_depth(geometry), ring_runs)
               if family == "ice40" or d > 128)
    return Estimate(logic, ffs, bram, cycles_per_input(geometry))


def check_fit(board: Board, config: SPConfig, cells_per_pe: int) -> Estimate:
    """The estimate, or `FitError` for the first resource the device does not have enough of."""
    est = estimate(board, config, cells_per_pe)
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
