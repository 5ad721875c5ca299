"""Board builds: the smallest iCE40 and ECP5 builds against stored baselines
(tests/board_baselines.json; resources within 10%, clock within 5%), the fit estimate and its
error, the PLL settings, `cellsp boards` and `cellsp build`'s messages.

The two builds run Yosys and nextpnr (YoWASP): minutes on a busy 2-core machine, plus about a
minute once on a fresh machine while YoWASP compiles the tools. To store new baselines after a
deliberate change to the gateware: ``CELLSP_UPDATE_BASELINES=1 pytest tests/test_boards.py``.
"""

import json
import os
import re
from pathlib import Path

import pytest

from cellsp.boards.boards import BOARDS, SMALL_CONFIG, get_board
from cellsp.boards.fit import FitError, check_fit, cycles_per_input, estimate, uart_inputs_per_s
from cellsp.boards.build import (BoardDesign, build_board, ice40_pll_parameters, nextpnr_options,
                                 pll_parameters)
from cellsp.sim.geometry import ArrayGeometry
from cellsp.host.cli import build_parser, main
from cellsp.host.cli.options import hardware
from cellsp.host.files import UsageError
from cellsp.sim.config import SPConfig

BASELINES = Path(__file__).with_name("board_baselines.json")
UPDATE = os.environ.get("CELLSP_UPDATE_BASELINES") == "1"
RESOURCE_TOLERANCE = 0.10
CLOCK_TOLERANCE = 0.05


def _baselines() -> dict:
    return json.loads(BASELINES.read_text())


@pytest.fixture(scope="module", params=sorted(_baselines()))
def built(request, tmp_path_factory):
    """(baseline entry, report) of one board's smallest build."""
    entry = _baselines()[request.param]
    board = get_board(entry["board"])
    config = SPConfig.from_dict(entry["config"])
    out = tmp_path_factory.mktemp(request.param)
    report = build_board(board, config, entry["cells_per_pe"], out)
    return entry, report


def _close(measured, expected, tolerance):
    return abs(measured - expected) <= tolerance * expected


def test_smallest_build_matches_baseline(built):
    entry, report = built
    if UPDATE:
        data = _baselines()
        data[entry["name"]]["expected"] = {
            "logic": report["logic"]["used"], "ffs": report["ffs"]["used"],
            "bram": report["bram"]["used"], "achieved_clock_mhz": report["achieved_clock_mhz"]}
        BASELINES.write_text(json.dumps(data, indent=2) + "\n")
        pytest.skip("baseline updated")
    expected = entry["expected"]
    board = get_board(entry["board"])
    assert report["timing_met"], report
    for field in ("logic", "ffs", "bram"):
        assert _close(report[field]["used"], expected[field], RESOURCE_TOLERANCE), \
            (field, report[field], expected[field])
    assert _close(report["achieved_clock_mhz"], expected["achieved_clock_mhz"], CLOCK_TOLERANCE)
    # what nextpnr says the device holds is what the registry says
    assert report["logic"]["available"] == board.device.logic
    assert report["bram"]["available"] == board.device.bram
    assert report["target_clock_mhz"] == board.clock_hz / 1e6
    # the bitstream, the report file and the command that programs it
    assert Path(report["bitstream"]).stat().st_size > 0
    assert json.loads((Path(report["bitstream"]).parent / "report.json").read_text()) == report
    assert report["program_command"][0] == board.programmer
    assert report["program_command"][-1] == report["bitstream"]


def test_estimate_is_close_to_the_build(built):
    """The fit estimate's coefficients describe these builds too (within 25% for logic and
    flip-flops, exactly for block RAM)."""
    entry, report = built
    est = report["estimate"]
    assert est["bram"] == report["bram"]["used"]
    for field in ("logic", "ffs"):
        assert _close(est[field], report[field]["used"], 0.25), (field, est, report[field])


def test_report_throughput_figures(built):
    _, report = built
    geometry = ArrayGeometry.for_config(SPConfig.from_dict(report["config"]),
                                        cells_per_pe=report["cells_per_pe"])
    assert report["cycles_per_input"] == cycles_per_input(geometry)
    assert report["inputs_per_s_at_target_clock"] == pytest.approx(
        report["target_clock_mhz"] * 1e6 / report["cycles_per_input"], rel=1e-3)
    uart = uart_inputs_per_s(geometry, report["baud"])
    assert report["uart_inputs_per_s"] == uart["round_trip"]
    assert uart["round_trip"] < uart["pipelined"]


def test_cycles_per_input_reproduces_the_measured_figures():
    """BENCHMARKS.md, learning / inference: 64 / 63 (P=1), 442 / 434 (P=8) cycles with 49-slot
    windows; 298 / 242 with 25-slot windows at P=8 (the 33 boost tries set a learning slot's
    length)."""
    sixteen = SPConfig(cell_shape=(16, 16), potential_pct=0.6, winners=2)
    for p, learning, inference in [(1, 64, 63), (8, 442, 434)]:
        geometry = ArrayGeometry.for_config(sixteen, cells_per_pe=p)
        assert cycles_per_input(geometry) == learning
        assert cycles_per_input(geometry, learn=False) == inference
    r2 = ArrayGeometry.for_config(sixteen.replace(input_shape=(32, 32), potential_radius=2),
                                  input_width=32, cells_per_pe=8)
    assert (cycles_per_input(r2), cycles_per_input(r2, learn=False)) == (298, 242)


def test_uart_figures_from_the_protocol_layout():
    # default config: 32 input bytes + flags; the reply prefix (6 bytes), 4 cycle bytes + 128
    # cell bytes; 7 framing bytes
    geometry = ArrayGeometry.for_config(SPConfig(), cells_per_pe=16)
    uart = uart_inputs_per_s(geometry, 3_000_000)
    assert (uart["step_request_bytes"], uart["step_reply_bytes"]) == (40, 145)
    assert uart["round_trip"] == pytest.approx(300_000 / 185, abs=0.1)
    assert uart["pipelined"] == pytest.approx(300_000 / 145, abs=0.1)


def test_config_that_cannot_fit_fails_before_synthesis(tmp_path, capsys):
    board = get_board("icebreaker")
    with pytest.raises(FitError) as err:
        check_fit(board, SPConfig(), 16)
    message = str(err.value)
    need = estimate(board, SPConfig(), 16).logic
    assert "logic cells" in message and f"{need:,}" in message and "5,280" in message
    assert "icebreaker" in message and "32x32 cells" in message

    path = tmp_path / "default.json"
    SPConfig().to_json(path)
    assert main(["build", "--board", "icebreaker", "--config", str(path),
                 "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "cannot fit the icebreaker" in captured.err
    assert not (tmp_path / "out").exists()          # nothing was built


def test_block_ram_shortage_names_block_ram():
    """The resource that runs out is the one named: here a device with logic to spare but
    only 4 block RAMs."""
    import dataclasses

    board = get_board("ulx3s-85f")
    small = dataclasses.replace(board, device=dataclasses.replace(board.device, bram=4))
    need = estimate(small, SPConfig(), 16).bram
    with pytest.raises(FitError, match=rf"needs about {need} EBR \(DP16KD\) and the device has 4;"):
        check_fit(small, SPConfig(), 16)


def test_default_configs_fit_their_boards():
    for board in BOARDS.values():
        check_fit(board, board.default_config, board.default_cells_per_pe)


def test_pll_parameters_match_ecppll():
    # `ecppll -i 100 -o 50`: CLKI_DIV 2, CLKFB_DIV 1, CLKOP_DIV 12, CLKOP_CPHASE 5
    par = pll_parameters(100_000_000, 50_000_000)
    assert (par["CLKI_DIV"], par["CLKFB_DIV"], par["CLKOP_DIV"], par["CLKOP_CPHASE"]) == \
        (2, 1, 12, 5)
    with pytest.raises(ValueError, match="cannot make"):
        pll_parameters(100_000_000, 1_000)


@pytest.mark.parametrize("input_mhz, output_mhz, dividers", [
    # `icepll -i IN -o OUT`'s DIVR, DIVF, DIVQ and FILTER_RANGE
    (12, 18, (0, 47, 5, 1)), (12, 48, (0, 63, 4, 1)), (12, 16.5, (0, 87, 6, 1)),
    (12, 17.625, (0, 46, 5, 1)), (100, 25, (0, 7, 5, 5)),
])
def test_ice40_pll_parameters_match_icepll(input_mhz, output_mhz, dividers):
    par = ice40_pll_parameters(int(input_mhz * 1e6), int(output_mhz * 1e6))
    assert (par["DIVR"], par["DIVF"], par["DIVQ"], par["FILTER_RANGE"]) == dividers
    assert par["output_hz"] == int(output_mhz * 1e6)


def test_ice40_pll_refuses_a_frequency_it_cannot_make_exactly():
    # icepll -o 100 makes 100.5 MHz; 16 MHz lies between 15.9375 (below the PLL's 16 MHz
    # floor) and 16.125
    with pytest.raises(ValueError, match=r"cannot make exactly 100 MHz from 12 MHz; nearby "
                                         r"it makes 96, 97.5, 99, 100.5, 102, 103.5 MHz"):
        ice40_pll_parameters(12_000_000, 100_000_000)
    with pytest.raises(ValueError, match=r"nearby it makes 16.125, 16.3125, 16.5 MHz"):
        ice40_pll_parameters(12_000_000, 16_000_000)
    with pytest.raises(ValueError, match="makes 16-275 MHz, not 12 MHz"):
        ice40_pll_parameters(12_000_000, 12_000_000)


def test_icebreaker_elaborates_with_its_pll():
    """The iCEBreaker runs from its PLL: the design holds an SB_PLL40_PAD on the 12 MHz
    oscillator's pin with the dividers that make its clock (18 MHz: VCO = 12 * (DIVF + 1) /
    (DIVR + 1) = 576 MHz, / 2**DIVQ), and only the pin is constrained (nextpnr derives the
    PLL output's constraint from it). No synthesis."""
    board = get_board("icebreaker")
    assert board.clock_hz == 18_000_000 and board.pll_from_hz == 12_000_000
    geometry = ArrayGeometry.for_config(SMALL_CONFIG.replace(cell_shape=(1, 4), edge="clip"),
                                        cells_per_pe=4)
    plan = board.platform().prepare(BoardDesign(board, geometry), name="cellsp")
    rtlil = plan.files["cellsp.il"]
    assert rtlil.count("cell \\SB_PLL40_PAD ") == 1 and "SB_GB_IO" not in rtlil
    found = {name: int(bits, 2) for name, bits in re.findall(
        r"parameter \\(DIVR|DIVF|DIVQ|FILTER_RANGE) \d+'([01]+)", rtlil)}
    assert found == {"DIVR": 0, "DIVF": 47, "DIVQ": 5, "FILTER_RANGE": 1}
    vco = board.pll_from_hz * (found["DIVF"] + 1) // (found["DIVR"] + 1)
    assert 533e6 <= vco <= 1066e6 and vco >> found["DIVQ"] == board.clock_hz
    assert 'parameter \\FEEDBACK_PATH "SIMPLE"' in rtlil
    assert "connect \\PACKAGEPIN \\clk12_0__io" in rtlil
    assert plan.files["cellsp.pcf"].count("set_frequency") == 1
    assert "set_frequency clk12_0__io 12.0" in plan.files["cellsp.pcf"]


def test_pll_board_elaborates_with_its_pll(tmp_path):
    """ECPIX-5 runs from a PLL: the generated netlist has the EHXPLLL with the dividers for
    its clock (48 MHz) from the 100 MHz oscillator, which is constrained (nextpnr derives the
    PLL output's constraint from it). No synthesis."""

    board = get_board("ecpix5-85f")
    geometry = ArrayGeometry.for_config(SMALL_CONFIG.replace(cell_shape=(1, 4), edge="clip"),
                                        cells_per_pe=4)
    plan = board.platform().prepare(BoardDesign(board, geometry), name="cellsp")
    rtlil = plan.files["cellsp.il"]
    assert "EHXPLLL" in rtlil
    assert board.clock_hz == 48_000_000 and board.pll_from_hz == 100_000_000
    assert "attribute \\FREQUENCY_PIN_CLKOP \"48\"" in rtlil
    par = pll_parameters(100_000_000, board.clock_hz)
    assert f"parameter \\CLKOP_DIV {par['CLKOP_DIV']}" in rtlil
    assert 'FREQUENCY PORT "clk100_0__io" 100000000.0 HZ' in plan.files["cellsp.lpf"]


def test_timing_failure_is_reported(monkeypatch, tmp_path, capsys):
    """`cellsp build` exits 1 naming both clocks when nextpnr's report misses the target,
    and does not offer the programming command."""
    import cellsp.boards.build as build

    def fake_build(board, config, p, out_dir, **kwargs):
        return {"logic": {"used": 10, "available": 100}, "ffs": {"used": 1, "available": 100},
                "bram": {"used": 1, "available": 30}, "spram": {"used": 0, "available": 4},
                "dsp": {"used": 0, "available": 8}, "logic_unit": "LC",
                "achieved_clock_mhz": 9.5, "target_clock_mhz": 12.0, "timing_met": False,
                "cycles_per_input": 150, "inputs_per_s_at_target_clock": 80000.0,
                "baud": 3_000_000, "uart_inputs_per_s": 10.0, "uart_pipelined": 20.0,
                "bitstream": str(tmp_path / "cellsp.bin"), "program_command": ["iceprog", "x"]}

    monkeypatch.setattr(build, "build_board", fake_build)
    assert main(["build", "--board", "icebreaker", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "timing missed" in captured.err and "9.5 MHz" in captured.err \
        and "12.0 MHz" in captured.err
    assert "program the board with" not in captured.out


def test_boards_command_lists_boards_and_limits(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    for board in BOARDS.values():
        line = next(l for l in out.splitlines() if l.startswith(board.name + " "))
        assert board.device.part in line
        assert f"{board.device.logic:,}" in line and f"{board.baud:,}" in line
        assert board.programmer in line
    assert "ECPIX-5" in out and "FT231X" in out


def test_sweep_table_sets_each_board_beside_the_software_sp():
    """`cellsp bench boards`'s table: one row per board, the largest array that met timing,
    and the software SP's speed on that config on this machine."""
    from cellsp.boards.sweep import software_sp_inputs_per_s, table_rows

    config = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1)
    soft = software_sp_inputs_per_s(config, steps=5, min_seconds=0.01)
    assert soft["learning"] > 0 and soft["inference"] > 0
    best = {"config": "3x3 cells", "logic_pct": 50.0, "bram_pct": 10.0, "target_clock_mhz": 12.0,
            "achieved_clock_mhz": 14.0, "cycles_per_input": 100, "inputs_per_s": 120000.0,
            "uart_inputs_per_s": 9000.0, "uart_inputs_per_s_pipelined": 15000.0}
    rows = table_rows([{"board": "icebreaker", "best": best, "software_sp": soft},
                       {"board": "ulx3s-85f", "best": None}])
    assert len(rows) == 4 and rows[0].count("|") == rows[2].count("|") == rows[3].count("|")
    assert f"{soft['learning']:,} / {soft['inference']:,}" in rows[2]
    assert "| ulx3s-85f | none |" in rows[3]


def test_rings_go_to_memory_above_the_boards_size_and_never_in_the_parallel_array():
    ulx3s = get_board("ulx3s-85f")
    assert ulx3s.geometry(ulx3s.default_config, 32).ring_memory_min == 0       # 1,024 cells
    large = ulx3s.array("32x64")
    assert large.config.num_cells == 2048
    geometry = ulx3s.geometry(large.config, large.cells_per_pe)
    assert geometry.ring_memory_min == ulx3s.ring_memory_min > 0
    assert ulx3s.geometry(large.config, large.cells_per_pe,
                          parallel_count=True).ring_memory_min == 0
    # the iCEBreaker keeps them in memory at every size
    ice = get_board("icebreaker")
    assert ice.geometry(SMALL_CONFIG.replace(cell_shape=(1, 4), edge="clip"),
                        4).ring_memory_min == ice.ring_memory_min > 0
    # in memory, the 2,048 cells' rings need fewer flip-flops than the 1,024 cells' in
    # flip-flops, and the array fits the ECP5-85F
    assert estimate(ulx3s, large.config, large.cells_per_pe).ffs < \
        estimate(ulx3s, ulx3s.default_config, 32).ffs
    check_fit(ulx3s, large.config, large.cells_per_pe)
    with pytest.raises(ValueError, match=r"offers no array 'nope'; its arrays: 32x64"):
        ulx3s.array("nope")


def test_each_board_runs_its_uart_within_its_bridge_and_clock():
    from cellsp.hdl.uart import bit_period

    for board in BOARDS.values():
        assert 0 < board.baud <= board.bridge_max_baud, board.name
        assert bit_period(board.clock_hz, board.baud) >= 4
        assert board.bit_cycles == board.clock_hz / board.baud


def test_build_options_are_checked_before_work(tmp_path, capsys):
    path = tmp_path / "c.json"
    SPConfig().to_json(path)
    assert main(["build", "--board", "ulx3s-85f", "--array", "32x64", "--config", str(path),
                 "--out", str(tmp_path / "a")]) == 2
    assert "--array and --config both name the array; give one" in capsys.readouterr().err
    assert main(["build", "--board", "icebreaker", "--array", "32x64",
                 "--out", str(tmp_path / "b")]) == 2
    assert "icebreaker offers no array '32x64'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_build_of_an_offered_array_uses_its_config(monkeypatch, tmp_path, capsys):
    """`cellsp build --array NAME` builds the offered config at its cells per PE, with the
    rings in memory, and tells the user to run it with the config file the build wrote."""
    import cellsp.boards.build as build

    seen = {}

    def fake_build(board, config, p, out_dir, **kwargs):
        seen.update(config=config, p=p, ring=board.geometry(config, p).ring_memory_min,
                    board=board, **kwargs)
        return {"logic": {"used": 10, "available": 100}, "ffs": {"used": 1, "available": 100},
                "bram": {"used": 1, "available": 30}, "spram": {"used": 0, "available": 0},
                "dsp": {"used": 0, "available": 8}, "logic_unit": "LUT4",
                "achieved_clock_mhz": 30.0, "target_clock_mhz": 25.0, "timing_met": True,
                "cycles_per_input": 3466, "inputs_per_s_at_target_clock": 7213.0,
                "baud": 3_000_000, "uart_inputs_per_s": 10.0, "uart_pipelined": 20.0,
                "bitstream": str(tmp_path / "cellsp.bit"), "program_command": ["prog", "x"]}

    monkeypatch.setattr(build, "build_board", fake_build)
    assert main(["build", "--board", "ulx3s-85f", "--array", "32x64", "--out",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    offered = get_board("ulx3s-85f").array("32x64")
    assert seen["config"] == offered.config and seen["p"] == 64 and seen["ring"] == 16
    assert seen["parallel_count"] is False
    assert "rings' long runs in memory" in out
    assert seen["board"] == get_board("ulx3s-85f").for_array("32x64")
    assert "cellsp compare --board ulx3s-85f --array 32x64 --transport serial:PORT" in out


def test_an_offered_array_brings_its_clock_and_synthesis_options():
    """`Board.for_array`: the iCEBreaker's 9x9 array is built with `-dff` at its own PLL
    clock; the ULX3S's 32x64 keeps the board's; the CLI's hardware options resolve --array
    to the same config and cells per PE, and refuse it without --board or with --config."""
    ice = get_board("icebreaker")
    nine = ice.for_array("9x9")
    offered = ice.array("9x9")
    assert nine.default_config == offered.config and nine.default_config.cell_shape == (9, 9)
    assert nine.default_cells_per_pe == offered.cells_per_pe == 81
    assert nine.synth_options == ("-dff",) and ice.synth_options == ()
    assert nine.clock_hz == offered.clock_hz != ice.clock_hz and nine.baud == ice.baud
    assert nine.pll_from_hz == ice.pll_from_hz and nine.arrays == ()
    ulx3s = get_board("ulx3s-85f")
    wide = ulx3s.for_array("32x64")
    assert (wide.clock_hz, wide.synth_options) == (ulx3s.clock_hz, ulx3s.synth_options)
    assert not wide.geometry(wide.default_config, 64).row_scan
    # the ECPIX-5's row-wide array: its own clock and UART rate, the row-wide geometry and
    # nextpnr's static placer (the heap placer's placements did not route)
    ecpix = get_board("ecpix5-85f")
    rows = ecpix.for_array("32x32-rows")
    assert (rows.clock_hz, rows.baud, rows.row_scan) == (40_000_000, 8_000_000, True)
    assert rows.bit_cycles >= 4 and (ecpix.baud, ecpix.row_scan) == (12_000_000, False)
    assert (rows.placer, ecpix.placer, wide.placer) == ("static", None, None)
    assert nextpnr_options(rows)[-2:] == ["--placer", "static"]
    assert "--placer" not in nextpnr_options(ecpix)
    assert nextpnr_options(ecpix)[nextpnr_options(ecpix).index("--router") + 1] == "router2"
    assert rows.geometry(rows.default_config, 32).row_scan
    assert not rows.geometry(rows.default_config, 32, parallel_count=True).row_scan
    parser = build_parser()
    args = parser.parse_args(["verify", "--board", "icebreaker", "--array", "9x9"])
    assert hardware(args)[:2] == (offered.config, 81)
    with pytest.raises(UsageError, match="add --board NAME"):
        hardware(parser.parse_args(["verify", "--array", "9x9"]))
    with pytest.raises(UsageError, match="offers no array '32x64'"):
        hardware(parser.parse_args(["verify", "--board", "icebreaker", "--array", "32x64"]))


def test_boards_command_lists_bridge_rates_and_offered_arrays(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    for board in BOARDS.values():
        line = next(l for l in out.splitlines() if l.startswith(board.name + " "))
        assert f"{board.baud:,} ({board.bridge_max_baud:,})" in line
        assert f"up to {board.bridge_max_baud:,} baud" in out
    assert "--array 32x64: 32x64 cells, P=64;" in out
    assert "--array 64x64: 64x64 cells, P=512;" in out
    nine = get_board("icebreaker").for_array("9x9")
    assert f"--array 9x9: 9x9 cells, P=81, {nine.clock_hz / 1e6:g} MHz, synth_ice40 -dff;" in out
    assert ("--array 32x32-rows: 32x32 cells, P=32, row-wide (a window row a cycle), 40 MHz, "
            "8,000,000 baud, nextpnr --placer static;") in out


def _fake_report(board, config, p, timing_met=True, achieved=31.5, clock_hz=None):
    return {"board": board.name, "config_hash": config.hash, "cells_per_pe": p,
            "target_clock_mhz": round((clock_hz or board.clock_hz) / 1e6, 3),
            "timing_met": timing_met, "achieved_clock_mhz": achieved,
            "logic": {"used": 12345, "available": board.device.logic}}


def test_links_bench_rows_take_build_reports_link_formats_and_the_software_sp(tmp_path):
    """`host/bench_boards.py`: the array's figures from a matching build report (else the
    estimate, said), the link per mode and reply format from the bytes a step costs, end to
    end the slower of the two, and the software SP beside them."""
    from cellsp.host.bench_boards import (StepBytes, board_row, board_rows, link_inputs_per_s,
                                          protocol2_step_bytes, rows_json, table_lines)

    board = get_board("ulx3s-85f")
    config = board.default_config
    # a build that missed timing, one at another cells per PE and one at another clock are
    # not taken (they are found first)
    for name, report in [("a-missed", _fake_report(board, config, 32, False, 20.0)),
                         ("b-other", _fake_report(board, config, 16, True, 40.0)),
                         ("b-slower", _fake_report(board, config, 32, True, 40.0, 20_000_000)),
                         ("c-good", _fake_report(board, config, 32))]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    assert link_inputs_per_s(3_000_000, StepBytes(40, 145)) == pytest.approx(300_000 / 145)
    assert link_inputs_per_s(3_000_000, StepBytes(40, 145), pipelined=False) == \
        pytest.approx(300_000 / 185)

    def batched(geometry, board):
        # a format whose learning steps are answered 8 at a time with 10 bytes
        steps = protocol2_step_bytes(geometry, board)
        return {"learning": StepBytes(steps["learning"].request, 10 / 8),
                "inference": steps["inference"]}

    soft = {"learning": 1000, "inference": 20000}
    rows = board_rows([board], build_root=tmp_path, software=lambda c: soft,
                      formats={"protocol 2": protocol2_step_bytes, "batched": batched})
    assert [r["array"] for r in rows] == ["default"] + [a.name for a in board.arrays]
    default, large = rows[0], rows[1]
    assert default["source"] == f"build {tmp_path / 'c-good' / 'report.json'}"
    assert default["achieved_clock_mhz"] == 31.5 and default["logic"] == 12345
    assert large["source"].startswith("fit estimate")
    assert default["array_inputs_per_s"]["learning"] == pytest.approx(25e6 / 1738, abs=0.1)
    p2 = default["link"]["protocol 2"]["learning"]
    assert (p2["request_bytes"], p2["reply_bytes"]) == (40, 145)
    assert p2["pipelined"] == pytest.approx(300_000 / 145, abs=0.1)
    # batched learning replies: the 40-byte request is the longer direction
    assert default["link"]["batched"]["learning"]["pipelined"] == pytest.approx(7500)
    assert default["end_to_end_inputs_per_s"]["batched"]["learning"] == 7500
    assert default["end_to_end_inputs_per_s"]["protocol 2"]["inference"] == \
        pytest.approx(300_000 / 145, abs=0.1)
    assert default["learning_vs_software"]["batched"] == 7.5
    data = rows_json(rows)
    assert data["machine"]["cores"] and json.loads(json.dumps(data))["rows"] == rows
    lines = table_lines(rows)
    assert len(lines) == 2 + 2 * len(rows)
    # protocol 3's BATCH (the default formats): 4 inputs of 32 bytes a frame at a 16x16 input,
    # 34 bytes a step to the board and 5.25 back; inference stays a STEP
    real = board_row(board, "default", config, 32, software=soft)
    assert set(real["link"]) == {"STEP", "BATCH learning"}
    batch = real["link"]["BATCH learning"]
    assert (batch["learning"]["request_bytes"], batch["learning"]["reply_bytes"]) == (34, 5.25)
    assert batch["learning"]["pipelined"] == pytest.approx(300_000 / 34, abs=0.1)
    assert batch["inference"] == real["link"]["STEP"]["inference"]
    assert real["formats_not_offered"] == []
    # an engine without BATCH (the iCEBreaker's) learns in STEPs: no BATCH figures for it, in
    # the row or the table, and the row says so
    ice = get_board("icebreaker")
    plain = board_row(ice, "default", ice.default_config, ice.default_cells_per_pe,
                      software=soft)
    assert set(plain["link"]) == set(plain["end_to_end_inputs_per_s"]) == {"STEP"}
    assert set(plain["learning_vs_software"]) == {"STEP"}
    assert plain["formats_not_offered"] == ["BATCH learning"]
    ice_lines = table_lines([plain])
    assert len(ice_lines) == 3 and "BATCH" not in "\n".join(ice_lines)
    assert all(l.count("|") == lines[0].count("|") for l in lines)
    assert "| 1,000 / 20,000 | 7.5x |" in lines[3]


def test_the_count_parallel_default_array_cannot_fit_an_ecp5_85f():
    """The count-parallel array reads every cell's permanence and pool bit each cycle: at
    32x32 cells that is 10,240 bits a cycle, more than the 208 block RAMs' ports give, so its
    memories go to LUT RAM and the estimate (a lower bound: its synapse paths are not in it)
    exceeds the device; `cellsp build --parallel` says so before synthesis."""
    board = get_board("ulx3s-85f")
    est = estimate(board, SPConfig(), 32, parallel_count=True)
    assert est.cycles_per_input == 85 and est.notes
    with pytest.raises(FitError, match=r"needs about [\d,]+ LUT4s and the device has 83,640"):
        check_fit(board, SPConfig(), 32, parallel_count=True)
    # the serial array of the same config fits
    check_fit(board, SPConfig(), 32)


def test_links_bench_command_checks_its_builds_folder_then_writes_its_table(tmp_path, capsys):
    out = tmp_path / "links.json"
    assert main(["bench", "links", "--builds", str(tmp_path / "none"), "--no-software",
                 "--out", str(out)]) == 2
    assert "--builds" in capsys.readouterr().err and not out.exists()
    assert main(["bench", "links", "--board", "icebreaker", "--builds", str(tmp_path),
                 "--no-software", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["board"], r["array"]) for r in data["rows"]] == [("icebreaker", "default"),
                                                                 ("icebreaker", "9x9")]
    # the 9x9 array at its own clock; the engine has no BATCH: a row an array, the STEP's
    assert [r["clock_hz"] for r in data["rows"]] == [18_000_000, 16_125_000]
    assert data["rows"][0]["software_sp"] is None and len(data["table"]) == 2 + 2


def test_links_bench_simulate_times_each_default_array(monkeypatch, tmp_path, capsys):
    """`cellsp bench links --simulate`: `time_link` for each board's default array, and for an
    offered one only when --simulate-array names it, its figures in a second table beside the
    arithmetic's."""
    import cellsp.host.link_timing as link_timing

    calls = []

    def fake_time_link(board, config, p, steps, log):
        calls.append((board.name, config.cell_shape, p, steps))
        return {"formats": {"STEP": {"inputs_per_s": 4663.0, "rx_bytes_per_step": 16.0,
                                     "tx_bytes_per_step": 25.0, "line_busy": 0.25,
                                     "bit_exact": True}}, "formats_not_offered": ["BATCH learning"]}

    monkeypatch.setattr(link_timing, "time_link", fake_time_link)
    out = tmp_path / "links.json"
    assert main(["bench", "links", "--board", "icebreaker", "--no-software", "--simulate",
                 "--steps", "7", "--builds", str(tmp_path), "--out", str(out)]) == 0
    ice = get_board("icebreaker")
    assert calls == [("icebreaker", (8, 8), ice.default_cells_per_pe, 7)]
    data = json.loads(out.read_text())
    assert data["simulated_table"][2] == (
        "| icebreaker, default | STEP | 4,663 | 9,326 (12,000 / 9,326) | 50% | 16.00 / 25.00 | "
        "25% | yes |")
    assert data["simulated_table"][2] in capsys.readouterr().out
    # an offered array named by --simulate-array is timed as its board builds it
    calls.clear()
    assert main(["bench", "links", "--board", "icebreaker", "--no-software", "--simulate",
                 "--simulate-array", "9x9", "--steps", "7", "--builds", str(tmp_path),
                 "--out", str(out), "--force"]) == 0
    assert calls == [("icebreaker", (8, 8), ice.default_cells_per_pe, 7),
                     ("icebreaker", (9, 9), 81, 7)]
    assert [r["array"] for r in json.loads(out.read_text())["rows"] if "simulated" in r] == \
        ["default", "9x9"]
    # checked before any work: an array no board named offers, or without --simulate
    for args, said in ((["--simulate", "--simulate-array", "32x64"], "no board here offers it"),
                       (["--simulate-array", "9x9"], "add --simulate")):
        assert main(["bench", "links", "--board", "icebreaker", "--no-software", *args,
                     "--builds", str(tmp_path), "--out", str(out), "--force"]) == 2
        assert said in capsys.readouterr().err
    assert calls == [("icebreaker", (8, 8), ice.default_cells_per_pe, 7),
                     ("icebreaker", (9, 9), 81, 7)]


def test_links_bench_simulate_stopped_part_way_keeps_what_it_had(monkeypatch, tmp_path, capsys):
    """Interrupted while the first board is timed, `--simulate` still leaves the arithmetic
    table in --out, and says so in one line with the signal's status."""
    import cellsp.host.link_timing as link_timing

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(link_timing, "time_link", interrupted)
    out = tmp_path / "links.json"
    assert main(["bench", "links", "--board", "icebreaker", "--no-software", "--simulate",
                 "--builds", str(tmp_path), "--out", str(out)]) == 130
    data = json.loads(out.read_text())
    assert len(data["table"]) == 2 + 2 and len(data["simulated_table"]) == 2
    err = capsys.readouterr().err
    assert (f"interrupted while timing the links in simulation; {out} holds the arithmetic "
            f"table and the 0 board(s) timed before") in err
