"""The netlist that goes into a bitstream, simulated (cellsp.boards.netlist,
cellsp.host.pty_link.board_netlist_pty_link): Yosys's synth_ice40 / synth_ecp5 output with the
vendor cell models, compiled by Verilator behind the pty harness at the board's UART timing,
driven by the host driver and compared bit for bit with the golden model.

The designs are the smallest board builds of tests/board_baselines.json (1x4 cells, one PE).
Cold, each costs a synthesis (30-70 s) and a Verilator build (1.5-5 min on a busy 2-core
machine); both are cached under $CELLSP_CACHE, and the tests then take about a minute.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from cellsp.boards.boards import get_board
from cellsp.boards.build import BuildError
from cellsp.boards.netlist import (ICE40_PLL_STAND_IN, PINS_MODULE, board_netlist, netlist_key,
                                   netlist_model_key, netlist_model_text, pins_module)
from cellsp.hdl.uart import bit_period
from cellsp.host.cli import main
from cellsp.host.pty_link import (NETLIST_FLAGS, PtyLink, board_netlist_pty_link,
                                  cell_model_sources)
from cellsp.host.verify import verify, verify_netlist
from cellsp.host.verilator_build import NETLIST_HARNESS
from cellsp.sim.config import SPConfig

BASELINES = json.loads(Path(__file__).with_name("board_baselines.json").read_text())
STEPS = 20


def smallest(name: str):
    """(board, config, cells per PE) of the baseline entry `name`."""
    entry = BASELINES[name]
    return get_board(entry["board"]), SPConfig.from_dict(entry["config"]), entry["cells_per_pe"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["icebreaker-smallest", "ulx3s-85f-smallest"])
def test_smallest_netlist_is_bit_exact(name):
    board, config, p = smallest(name)
    report, figures = verify_netlist(board, config, p, steps=STEPS, learn=True, seed=3)
    assert report.steps == STEPS
    assert report.mismatches == 0, report.messages
    # the netlist is made of the vendor's primitives, block RAM included
    cells = figures["netlist_cells"]
    if board.device.family == "ice40":
        assert cells["SB_LUT4"] > 1000 and cells["SB_RAM40_4K"] > 0
        # the iCEBreaker's clock comes from its PLL, bypassed in the simulation
        assert cells["SB_PLL40_PAD"] == 1
    else:
        assert cells["LUT4"] > 1000 and cells["DP16KD"] > 0


def invert_lut(netlist_text: str, output_wire: str) -> str:
    """`netlist_text` with the truth table of the SB_LUT4 that drives `output_wire` inverted."""
    instance = re.compile(r"  SB_LUT4 #\(\n    \.LUT_INIT\(16'h([0-9a-f]{4})\)\n  \) [^\n]*\n"
                          r"(?:    [^\n]*\n)*?    \.O\(" + re.escape(output_wire) + r" ?\)")
    found = instance.search(netlist_text)
    assert found, f"no SB_LUT4 drives {output_wire}"
    start, end = found.span(1)
    inverted = f"{int(found.group(1), 16) ^ 0xFFFF:04x}"
    return netlist_text[:start] + inverted + netlist_text[end:]


@pytest.mark.slow
def test_a_wrong_gate_in_the_netlist_is_found():
    """The comparison can fail: the iCE40 netlist with one LUT inverted (the one that computes
    the top bit of the permanence written back to block RAM) disagrees with the golden model."""
    board, config, p = smallest("icebreaker-smallest")
    netlist = board_netlist(board, config, p)
    text = netlist.path.read_text()
    wires = sorted(set(re.findall(r"\.O\((\\board\.engine\.array\.perm_0\.0\.0_WDATA_7_"
                                  r"SB_DFFSR_Q_D) ?\)", text)))
    assert wires, "the netlist no longer names the permanence's write data this way"
    mutated = invert_lut(text, wires[0])
    assert mutated != text
    link = PtyLink(netlist_model_text(board, mutated), PINS_MODULE,
                   bit_period(board.clock_hz, board.baud), name="cellsp-netlist-mutated",
                   harness=NETLIST_HARNESS, sources=cell_model_sources("ice40"),
                   flags=NETLIST_FLAGS)
    with link as port:
        report = verify(config, steps=STEPS, learn=True, seed=3,
                        transport=f"serial:{port}@{board.baud}",
                        geometry=board.geometry(config, p))
    assert report.mismatches > 0 and report.messages


def test_netlist_keys_cover_options_and_boards():
    """A netlist's cache key changes with the synthesis options and the board, and the model
    of a netlist is keyed by it (no synthesis needed to find a cached model)."""
    board, config, p = smallest("icebreaker-smallest")
    geometry = board.geometry(config, p)
    plain = netlist_key(board, geometry)
    assert netlist_key(board, geometry, ("-dff",)) != plain
    ulx3s = get_board("ulx3s-85f")
    assert netlist_key(ulx3s, ulx3s.geometry(config, p)) != plain
    link = board_netlist_pty_link(board, config, p)
    assert link.model.key == netlist_model_key(board, geometry)
    dff = board_netlist_pty_link(board, config, p, synth_options=("-dff",))
    assert dff.model.cache_key != link.model.cache_key


def test_cell_models_are_the_vendors():
    """The iCE40 models are Yosys's cells_sim.v (one line changed); for ECP5, the DP16KD block
    RAM model replaces the black box and the includes come along."""
    ice40 = cell_model_sources("ice40")
    assert "module SB_LUT4" in ice40["cells/cells_sim.v"]
    assert "=== 1'bz" not in ice40["cells/cells_sim.v"].split("module SB_GB_IO")[0]
    ecp5 = cell_model_sources("ecp5")
    assert ecp5["cells/cells_sim.v"].count("module DP16KD") == 0
    assert "module DP16KD" in ecp5["cells/ecp5_dp16kd.v"]
    assert "cells/common_sim.vh" in ecp5


def test_pins_module_names_the_board_pins():
    text = "module cellsp(uart_0__rx__io, uart_0__tx__io, clk12_0__io);\nendmodule\n"
    pins = pins_module(text)
    assert ".clk12_0__io(clk_pin)" in pins and ".uart_0__tx__io(tx_pin)" in pins
    with pytest.raises(Exception, match="cannot tell"):
        pins_module("module cellsp(a, b, c);\nendmodule\n")


@pytest.mark.parametrize("args, message", [
    (["--netlist"], "name the board with --board"),
    (["--board", "icebreaker", "--netlist", "--transport", "verilator"], "takes no --transport"),
    (["--board", "icebreaker", "--synth-option=-dff"], "--synth-option needs --netlist"),
])
def test_netlist_option_errors_come_first(args, message, capsys):
    assert main(["verify", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellsp verify: error:") and message in err[0]


def test_the_ice40_pll_is_bypassed_in_the_model():
    """The iCEBreaker netlist's SB_PLL40_PAD becomes the stand-in (its clock out is the pin's,
    LOCK high); a board without a PLL gets no stand-in; a netlist without exactly one PLL is
    refused."""
    board = get_board("icebreaker")
    pll = "  SB_PLL40_PAD #(\n    .DIVF(7'h2f)\n  ) pll (\n    .PACKAGEPIN(clk12_0__io)\n  );\n"
    text = f"module cellsp(uart_0__rx__io, uart_0__tx__io, clk12_0__io);\n{pll}endmodule\n"
    model = netlist_model_text(board, text)
    assert "  SB_PLL40_PAD " not in model and f"  {ICE40_PLL_STAND_IN} #(" in model
    assert model.count(f"module {ICE40_PLL_STAND_IN} ") == 1
    assert "assign PLLOUTGLOBAL = PACKAGEPIN;" in model and "assign LOCK = 1'b1;" in model
    no_pll = dataclasses.replace(board, clock_hz=12_000_000, pll_from_hz=None)
    assert ICE40_PLL_STAND_IN not in netlist_model_text(no_pll, text)
    with pytest.raises(BuildError, match="2 SB_PLL40_PAD instances"):
        netlist_model_text(board, text.replace(pll, pll + pll))
