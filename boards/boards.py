"""The open FPGA boards cellsp builds for and what each device holds: plain data that imports
no Amaranth, so that picking a board's baud rate or default array (`cellsp run --board`,
`--transport serial:...`) stays quick.

A `Board` names its amaranth-boards platform, its oscillator, the UART bridge's baud rate, the
command that programs it and the default array for it (the largest that met timing there, from
`cellsp bench boards`). Whether a config fits a board is `cellsp.boards.fit`.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass, replace

from cellsp.sim.config import SPConfig
from cellsp.sim.geometry import ArrayGeometry

__all__ = ["Device", "Board", "BoardArray", "ULX3S_2048_CONFIG", "BOARDS", "get_board", "default_cells_per_pe", "SMALL_CONFIG",
           "ICEBREAKER_CONFIG", "SERIAL_BAUD"]


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
        """What `logic` counts, in words."""
        return "logic cells" if self.family == "ice40" else "LUT4s"

    @property
    def bram_name(self) -> str:
        """What `bram` counts, in words."""
        return "EBR (SB_RAM40_4K)" if self.family == "ice40" else "EBR (DP16KD)"


# Device sizes from the Lattice data sheets (iCE40 UltraPlus DS FPGA-DS-02008, ECP5 DS1044);
# they are the totals nextpnr's --report gives as "available" for the same bel types.
ICE40UP5K = Device("ice40", "iCE40UP5K", logic=5280, ffs=5280, bram=30, spram=4, dsp=8)
LFE5U_85F = Device("ecp5", "LFE5U-85F", logic=83640, ffs=83640, bram=208, dsp=156)
LFE5UM5G_85F = Device("ecp5", "LFE5UM5G-85F", logic=83640, ffs=83640, bram=208, dsp=156)


@dataclass(frozen=True)
class BoardArray:
    """An array a board offers beside its default (`--board B --array NAME` of `cellsp
    build`, `run`, `verify`, `compare` and `demo`): the config, its cells per PE, whether a
    build of it was measured to meet timing, a line about it, and where it differs from the
    board's default build, its clock (`clock_hz`, from the board's PLL when it has one), its
    UART's rate (`baud`: at least 4 cycles a bit of its clock), its Yosys options
    (`synth_options`) and nextpnr's placer (`placer`). `Board.for_array` gives the board as it
    builds it."""

    name: str
    config: SPConfig
    cells_per_pe: int
    measured: bool = False
    note: str = ""
    #: the design clock (default: the board's `clock_hz`)
    clock_hz: int | None = None
    #: the UART's rate (default: the board's `baud`)
    baud: int | None = None
    #: options of synth_ice40 / synth_ecp5 (default: the board's `synth_options`)
    synth_options: tuple[str, ...] | None = None
    #: the row-wide serial array (`ArrayGeometry.row_scan`: a window row a cycle)
    row_scan: bool = False
    #: nextpnr's placer (default: the board's `placer`)
    placer: str | None = None


@dataclass(frozen=True)
class Board:
    """One board: its platform, device, oscillator and UART, and how to program it.

    `platform_path` is "module:Class" in amaranth_boards (imported only when a build needs it).
    `baud` is the rate the gateware UART runs at: a rate the USB bridge makes, at most its
    `bridge_max_baud` and at most a quarter of the clock (the UART makes any rate with at least
    4 clock cycles a bit exactly on average, a fractional number of cycles included:
    ``cellsp.hdl.uart.bit_period``). `program` is the
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
    #: The oscillator, when the design runs on a PLL's clock (`clock_hz`) instead (iCE40:
    #: `cellsp.boards.build.ice40_pll_parameters`; ECP5: `pll_parameters`).
    pll_from_hz: int | None = None
    #: `ArrayGeometry.ring_memory_min` of builds for this board (0: rings in flip-flops)
    ring_memory_min: int = 0
    #: the rings of configs of at most this many cells stay in flip-flops (`ring_memory_min`
    #: applies to larger ones)
    ring_memory_above_cells: int = 0
    #: the fastest rate the USB bridge carries (its data sheet); `baud` is at most this
    bridge_max_baud: int = 0
    #: options of Yosys's synth_ice40 / synth_ecp5 in this board's builds
    synth_options: tuple[str, ...] = ()
    #: arrays offered beside the default (`BoardArray`)
    arrays: tuple[BoardArray, ...] = ()
    #: the protocol engine executes BATCH requests (`cellsp run --no-outputs`; about 300
    #: logic cells on an iCE40)
    batching: bool = True
    #: the default array is the row-wide serial array (`ArrayGeometry.row_scan`)
    row_scan: bool = False
    #: nextpnr's placer ("heap", "sa", "static"; None: nextpnr's default, heap)
    placer: str | None = None

    def array(self, name: str) -> BoardArray:
        """The offered array called `name`; a ValueError lists the board's arrays otherwise."""
        for offered in self.arrays:
            if offered.name == name:
                return offered
        known = ", ".join(a.name for a in self.arrays) or "none besides its default"
        raise ValueError(f"the {self.name} offers no array {name!r}; its arrays: {known} "
                         f"(`cellsp boards` lists them)")

    def for_array(self, name: str) -> "Board":
        """The board as it builds its offered array `name`: that array as its default, at the
        array's clock and UART rate, with its synthesis options and placer (a ValueError names
        the board's arrays when it offers none called `name`)."""
        offered = self.array(name)
        return replace(
            self, default_config=offered.config, default_cells_per_pe=offered.cells_per_pe,
            default_measured=offered.measured, clock_hz=offered.clock_hz or self.clock_hz,
            baud=offered.baud or self.baud,
            synth_options=(self.synth_options if offered.synth_options is None
                           else offered.synth_options), row_scan=offered.row_scan,
            placer=offered.placer or self.placer, arrays=())

    def geometry(self, config: SPConfig, cells_per_pe: int,
                 parallel_count: bool = False) -> ArrayGeometry:
        """The hardware layout of `config` in a build for this board: the serial array (the
        row-wide one when the board's `row_scan`), its rings' long runs in block RAM when the
        board keeps them there for a config of this size; or the count-parallel array
        (`parallel_count`; its rings in flip-flops)."""
        in_memory = not parallel_count and config.num_cells > self.ring_memory_above_cells
        return ArrayGeometry.for_config(config, cells_per_pe=cells_per_pe,
                                        ring_memory_min=self.ring_memory_min if in_memory else 0,
                                        parallel_count=parallel_count,
                                        row_scan=self.row_scan and not parallel_count)

    @property
    def bit_cycles(self) -> float:
        """Clock cycles per UART bit at `baud` (at least 4; a fraction is exact on average)."""
        return self.clock_hz / self.baud

    @property
    def oscillator_hz(self) -> int:
        """The board oscillator's frequency (the PLL's input when there is one)."""
        return self.pll_from_hz or self.clock_hz

    def platform(self):
        """A new instance of the board's amaranth-boards platform."""
        module, cls = self.platform_path.split(":")
        return getattr(importlib.import_module(module), cls)()

    @property
    def programmer(self) -> str:
        """The programming tool's command name."""
        return self.program[0]

    def program_command(self, bitstream_path: str) -> list[str]:
        """The command that programs the board with the bitstream at `bitstream_path`."""
        return [part.replace("{bitstream}", str(bitstream_path)) for part in self.program]

    def programmer_found(self) -> bool:
        """Whether the programming tool is on PATH."""
        return shutil.which(self.programmer) is not None


#: The base of the arrays for small devices (iCE40UP5K): an 8x8 input, 25-slot windows (r=2).
SMALL_CONFIG = SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=2,
                        potential_pct=0.6, winners=2)
# A PE costs about 700 UP5K logic cells, and its rings 48 logic cells a cell in flip-flops, so
# the iCEBreaker's cells are one PE serving them all (a band of every row), its rings' long
# runs in block RAM (ring_memory_min=16), with 25 potential synapses a cell (r=2, every slot),
# 6-bit permanences, 8-bit duty cycles and 6-bit boosts. Measured with protocol 2 (logic
# cells, EBR, MHz against 12; 2026-12-03): 8x8 cells 5,179 (98%), 13, 18.14; 9x9 (5,409) and
# 10x10 (5,756) do not fit (BENCHMARKS.md, "Board capacity"). Edge 'clip': under 'wrap' the
# band's neighbours sit at more ring positions.
ICEBREAKER_CONFIG = SMALL_CONFIG.replace(
    cell_shape=(8, 8), potential_pct=1.0, edge="clip", perm_bits=6, connected_threshold=32,
    perm_inc=3, perm_dec=1, perm_bump=2, init_spread=8, duty_bits=8, duty_period_log2=6,
    boost_bits=6, boost_frac_bits=3, boost_index_bits=3)

#: 2,048 cells (the classic SP's column count) over a 16x32 input: the default config's
#: receptive fields (r = 3) and parameters, twice the columns
ULX3S_2048_CONFIG = SPConfig(input_shape=(16, 32), cell_shape=(32, 64))
#: 4,096 cells (64x64) over a 32x32 input: the default config's proportions, four times the cells
#: (the ULX3S's 4,096-cell array)
CONFIG_64X64 = SPConfig(input_shape=(32, 32), cell_shape=(64, 64))

BOARDS: dict[str, Board] = {b.name: b for b in [
    Board(
        name="icebreaker",
        description="1BitSquared iCEBreaker (iCE40UP5K-SG48)",
        platform_path="amaranth_boards.icebreaker:ICEBreakerPlatform",
        # The array runs on the PLL's 18 MHz from the 12 MHz oscillator (SB_PLL40_PAD on its
        # pin: DIVR 0, DIVF 47, DIVQ 5, a 576 MHz VCO; the PLL makes 17.625 and 18.375 MHz
        # next to it): 1,930 cycles an input, 9,326 learning inputs/s, against 6,218 at 12
        # MHz. Measured (2026-12-03, 7d06661): the 8x8 default meets 18 MHz, 18.82 MHz routed
        # (19.02 with nextpnr's seed 2), 5,121 logic cells (97%), 1,975 flip-flops, 13 EBR;
        # nextpnr derives the 18 MHz constraint from the pin's 12 MHz. The UART keeps 3 Mbaud,
        # 6 cycles a bit (FT2232H channel B, up to 12 Mbaud; 12,000 STEPs/s pipelined)
        device=ICE40UP5K, clock_hz=18_000_000, pll_from_hz=12_000_000,
        baud=3_000_000, uart_bridge="FT2232H", bridge_max_baud=12_000_000,
        program=("iceprog", "{bitstream}"), bitstream="cellsp.bin",
        default_config=ICEBREAKER_CONFIG, default_cells_per_pe=64, default_measured=True,
        ring_memory_min=16,
        # no room for BATCH (103% of the logic cells with it); its array (9,326 steps/s) is
        # slower than its UART carries STEPs (12,000/s)
        batching=False,
        # Yosys's synth_ice40 -dff (ABC9 maps the flip-flops with the logic) fits 81 cells
        # where plain synthesis fits 64 (9x9 plain: about 5,350 logic cells of 5,280), at a
        # lower fmax (16.65 MHz built at 12): measured (2026-12-03) at the PLL's 16.125 MHz
        # (DIVR 0, DIVF 85, DIVQ 6; 16 MHz is the PLL's floor and it makes no exact 16):
        # 16.17 MHz routed, 5,235 logic cells (99.1%), 13 EBR; 2,440 cycles an input, 6,609
        # learning inputs/s; 5.4 / 5.1 points more `digits` accuracy (BENCHMARKS.md
        # section 10)
        arrays=(BoardArray("9x9", ICEBREAKER_CONFIG.replace(cell_shape=(9, 9)), 81,
                           measured=True, clock_hz=16_125_000, synth_options=("-dff",),
                           note="81 cells, one PE: 99% of the logic cells, 16.17 MHz routed; "
                                "5 points more accuracy on digits at 0.71x the default's "
                                "inputs a second"),),
    ),
    Board(
        name="ulx3s-85f",
        description="Radiona ULX3S with an LFE5U-85F (CABGA381, speed 6)",
        platform_path="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        device=LFE5U_85F, clock_hz=25_000_000,
        # The FT231X's fastest rate, 3 Mbaud (exact on its side: 3 MHz / 1): 25/3 = 8.33
        # cycles a bit, every bit edge within one cycle (40 ns) of its ideal time.
        baud=3_000_000, uart_bridge="FT231X", bridge_max_baud=3_000_000,
        program=("openFPGALoader", "-b", "ulx3s", "{bitstream}"), bitstream="cellsp.bit",
        # measured: 32x32 cells (the default config) at P=32, a PE a row, meet 25 MHz; with
        # protocol 3's engine (BATCH), 2026-12-03 at c486abf: 32.17 MHz routed with router2,
        # 30,927 LUTs (37%), 52,428 flip-flops (63%), 44 DP16KD. At P=16 they took
        # 73% of the LUTs, placed at 24.6 MHz and did not finish routing; the UART carries
        # fewer inputs a second than either (BENCHMARKS.md, "Board capacity")
        default_config=SPConfig(), default_cells_per_pe=32,
        default_measured=True,
        # Larger arrays keep their rings' long runs in memory (the flip-flops hold 1,024
        # cells' rings at 62%): the 32x64 array's rings take 8,064 flip-flops instead of
        # 96,256, the runs of 61-62 entries in LUT RAM. Measured (2026-12-03): 32x64 cells at
        # P=64 meet 25 MHz (38.06 MHz routed; 52,154 LUTs, 62%; 17,063 flip-flops, 20%; 77
        # DP16KD, 37%); 3,466 cycles an input, 7,213 inputs/s. The 32x32 default stays: the
        # default config, twice the inputs a second at the clock and over the link.
        ring_memory_min=16, ring_memory_above_cells=1024,
        # 4,096 cells (64x64) fit as 8 PEs of 8 rows (P = 512; a PE a row would need about
        # 101,400 LUT4s, the estimate). Measured (2026-12-04, BENCHMARKS.md section 3): 35.94
        # MHz routed, 42,367 LUT4s (51%), 21,562 flip-flops, 165 DP16KD (79%); 27,658 cycles
        # an input, 904 inputs/s: capacity, not speed
        arrays=(BoardArray("32x64", ULX3S_2048_CONFIG, 64, measured=True,
                           note="2,048 cells, a PE a row, rings' long runs in LUT RAM: 62% of "
                                "the LUTs, 38.06 MHz routed"),
                BoardArray("64x64", CONFIG_64X64, 512, measured=True,
                           note="4,096 cells, 8 PEs of 8 rows: 51% of the LUTs, 79% of the "
                                "block RAM, 35.94 MHz routed; 904 inputs/s")),
        notes="ULX3S platforms need openFPGALoader on PATH even to build: the build sets "
              "OPENFPGALOADER=true when it is missing",
    ),
    Board(
        name="ecpix5-85f",
        description="LambdaConcept ECPIX-5 with an LFE5UM5G-85F (CABGA554, speed 8)",
        platform_path="amaranth_boards.ecpix5:ECPIX585Platform",
        # The array cannot run at the 100 MHz oscillator (its learning path reached 31 MHz
        # at 8x8 cells on the ULX3S's slower speed grade): a PLL makes 48 MHz, so that the
        # UART runs at the FT2232H's top rate, 12 Mbaud (LambdaConcept's ECPIX-5
        # documentation), exactly 4 cycles a bit. Measured (2026-12-03): the 16x16 default
        # meets 48 MHz (63.86 MHz routed, 21% of the LUTs); at 30 MHz it reached 56.45.
        device=LFE5UM5G_85F, clock_hz=48_000_000, pll_from_hz=100_000_000,
        baud=12_000_000, uart_bridge="FT2232H", bridge_max_baud=12_000_000,
        program=("openFPGALoader", "-b", "ecpix5", "{bitstream}"), bitstream="cellsp.bit",
        # measured: 16x16 cells at P=16 meet 48 MHz; with protocol 3's engine (BATCH),
        # 2026-12-03 at c486abf: 64.94 MHz routed (router2), 17,623 LUTs (21%). 32x32 cells
        # would fit but give less accuracy per LUT (BENCHMARKS.md section 6)
        default_config=SPConfig(cell_shape=(16, 16)), default_cells_per_pe=16,
        default_measured=True,
        # larger arrays keep their rings' long runs in memory (as on the ULX3S): the 32x32
        # row-wide array with its rings in flip-flops placed at 69% of them and its router
        # did not converge (overused wires rising from 7,703 to 10,640 over iterations 12-17)
        ring_memory_min=16, ring_memory_above_cells=256,
        # the row-wide serial array: the default config's 32x32 cells, a window row (7
        # synapses) a cycle and 4 boost thresholds a cycle, 394 cycles an input (the serial
        # array: 1,738), from a 40 MHz PLL clock: 101,523 learning inputs/s; the UART at 8
        # Mbaud (the FT2232H's rate below 12: its special divisor 1), 5 cycles a bit. Its rings'
        # long runs in memory. Measured (2026-12-04, BENCHMARKS.md section 3): with nextpnr's
        # static placer, 54.70 MHz routed (placed at 47.31), 58,998 LUT4s (71%), 19,133
        # flip-flops, 76 DP16KD. The heap placer's placements (46.04 and 48.91 MHz) stalled
        # router2 at 3,000-4,700 overused wires before the state read-back shifted its words
        # out (not built with it since); built at 48 MHz (static placer) it routed at 45.35
        # MHz, short of the 48
        arrays=(BoardArray("32x32-rows", SPConfig(), 32, row_scan=True, clock_hz=40_000_000,
                           baud=8_000_000, placer="static", measured=True,
                           note="the default config's 1,024 cells, a window row a cycle: "
                                "394 cycles an input, 101,523 inputs/s; 71% of the LUTs, "
                                "54.70 MHz routed"),),
    ),
]}


def get_board(name: str) -> Board:
    """The board called `name`; a ValueError lists the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)} "
                         f"(`cellsp boards` lists them)") from None


def default_cells_per_pe(board: Board, config: SPConfig) -> int:
    """The board's cells per PE when `config` allows it, else the largest allowed value below
    it (fewer cells per PE: more logic, fewer cycles). A board whose default array has PEs
    serving parts of rows keeps to those (divisors of the columns); one with band PEs (the
    iCEBreaker) may take bands of rows (`ArrayGeometry.cells_per_pe_choices`)."""
    columns = config.cell_shape[1]
    choices = ArrayGeometry.for_config(config).cells_per_pe_choices()
    if board.geometry(board.default_config, board.default_cells_per_pe).separable:
        choices = [d for d in choices if columns % d == 0]
    return max(d for d in choices if d <= board.default_cells_per_pe)


#: the baud rate of a serial port named without one (`serial:PORT`): the iCEBreaker's UART
SERIAL_BAUD = BOARDS["icebreaker"].baud
