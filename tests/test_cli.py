"""The `cellsp` command line: config, verify (Amaranth), errors."""

import json
import shutil

import pytest

from cellsp.host.cli import main
from cellsp.sim import SPConfig


def test_config_prints_default_and_derived(capsys):
    assert main(["config", "--derived"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.split("#")[0]) == SPConfig().to_dict()
    assert "# boosted_bits: 10" in out


def test_config_rejects_bad_file(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"winners": 12}')
    assert main(["config", str(path)]) == 2
    assert "winners = 12 is outside the allowed range [1, 9]" in capsys.readouterr().err


def test_verify_amaranth_small_config(tmp_path, capsys):
    path = tmp_path / "small.json"
    SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
             stimulus_threshold=1).to_json(path)
    code = main(["verify", "--sim", "amaranth", "--config", str(path), "--steps", "12",
                 "--learn", "--idle", "0.2", "--stall", "0.2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "verify: 12 steps, 0 mismatches"


def test_verify_error_exits_non_zero(tmp_path, capsys):
    """An error is exit status 2 (1 is for a mismatch), with the report line all the same."""
    code = main(["verify", "--sim", "amaranth", "--config", str(tmp_path / "missing.json")])
    captured = capsys.readouterr()
    assert code == 2
    assert "does not exist" in captured.err
    assert captured.out.strip().splitlines()[-1] == "verify: 0 steps, 0 mismatches"


def test_verify_reports_mismatches(monkeypatch, tmp_path, capsys):
    """A hardware that differs makes verify count mismatches and exit 1."""
    import cellsp.host.verify as verify
    from cellsp.host.array_amaranth import AmaranthArraySim

    class Broken(AmaranthArraySim):
        def run(self, operations, vcd=None):
            results = super().run(operations, vcd)
            results.steps[1].active = ~results.steps[1].active
            return results

    monkeypatch.setattr(verify, "make_simulator", lambda kind, cfg, **hw: Broken(cfg, **hw))
    path = tmp_path / "small.json"
    SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1).to_json(path)
    code = main(["verify", "--sim", "amaranth", "--config", str(path), "--steps", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.strip().splitlines()[-1] == "verify: 3 steps, 9 mismatches"
    assert "step 1: cell (0, 0) active" in out


def test_demo_runs_the_hardware_and_writes_the_report(tmp_path, capsys):
    """The main job on a small config (8x8 input, 4x4 cells, 2 per PE) and 90 digits, through
    the compiled Verilator model: bit-exact, table printed, report written, both classic SPs
    with their noise curves."""
    path = tmp_path / "small.json"
    SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=2,
             stimulus_threshold=1).to_json(path)
    out_dir = tmp_path / "report"
    code = main(["demo", "--config", str(path), "--limit", "90", "--cells-per-pe", "2",
                 "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 output mismatches, 0 state differences" in out
    assert "output overlap, 20% bits moved" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["bit_exact"] and summary["inputs"] == 90
    # both classic SPs beside the hardware, each with the noise curve up to half the bits moved
    assert {"software SP (twin)", "software SP (user)"} <= set(summary["models"])
    assert set(summary["models"]["software SP (user)"]["noise_overlap"]) == {
        "0.05", "0.1", "0.2", "0.3", "0.4", "0.5"}
    assert {"inputs_and_active_cells.png", "duty_and_boost_maps.png",
            "accuracy_and_noise.png", "report.md"} <= {p.name for p in out_dir.iterdir()}


def test_bench_transport_reports_the_fastest_of_its_rounds():
    """`cellsp bench transport --rounds N`: every round's figure listed, the fastest reported,
    the model's cycles per input those of the array's step plus the protocol's (the demo test's
    config and cells per PE, so the same cached model)."""
    from cellsp.host.bench_transport import bench_transport

    cfg = SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=2, stimulus_threshold=1)
    data = bench_transport([("small", cfg, 2)], steps=6, rounds=3, progress=None)
    assert data["rounds"] == 3
    for key in ("learning", "inference"):
        row = data["results"][0][key]
        assert len(row["inputs_per_s_each_round"]) == 3
        assert row["inputs_per_s"] == max(row["inputs_per_s_each_round"])
        assert row["model_cycles_per_input"] >= row["array_cycles_per_step"]
    with pytest.raises(ValueError, match="at least 1 round"):
        bench_transport([("small", cfg, 2)], steps=6, rounds=0, progress=None)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_model_instructions_per_input_do_not_depend_on_the_run():
    """`cellsp bench transport --instructions`: the model's instructions per learning and per
    inference input, from a recorded driver stream replayed under callgrind (the demo test's
    cached model). Two recordings agree within 1%; a learning step costs more than an
    inference step (it also writes the permanences and updates the duty cycles)."""
    from cellsp.sim.geometry import ArrayGeometry
    from cellsp.host.bench_transport import model_instructions
    from cellsp.host.targets import verilator_link

    cfg = SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=2, stimulus_threshold=1)
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=2)
    link = verilator_link(geometry)
    link.open()
    try:
        first, second = (model_instructions(link, geometry, steps=10) for _ in range(2))
    finally:
        link.close()
    assert first["steps"] == 10 and "valgrind" in first["tool"]
    for key in ("learning", "inference"):
        assert first[key] > 0 and abs(first[key] - second[key]) < 0.01 * first[key]
    assert first["learning"] > first["inference"]


def test_verify_through_the_protocol_and_run_an_npy(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "small.json"
    cfg = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                   stimulus_threshold=1)
    cfg.to_json(path)
    code = main(["verify", "--transport", "amaranth", "--config", str(path), "--steps", "8",
                 "--learn", "--cells-per-pe", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "verify: 8 steps, 0 mismatches"

    X = np.random.default_rng(0).random((10, 6, 6)) < 0.4
    np.save(tmp_path / "in.npy", X)
    code = main(["run", str(tmp_path / "in.npy"), str(tmp_path / "out.npy"), "--config",
                 str(path), "--transport", "amaranth", "--cells-per-pe", "1", "--learn"])
    assert code == 0, capsys.readouterr()
    from cellsp.sim import GoldenModel
    assert (np.load(tmp_path / "out.npy") == GoldenModel(cfg).run(X, learn=True)).all()
    assert main(["run", str(tmp_path / "in.npy"), str(tmp_path / "o.npy"), "--transport",
                 "serial:/dev/null", "--config", str(path), "--cells-per-pe", "1"]) == 2
    assert "cannot open serial port '/dev/null'" in capsys.readouterr().err


def test_run_without_outputs_writes_the_count_and_check_of_the_golden_maps(tmp_path, capsys):
    """`cellsp run --no-outputs`: the inputs go in BATCH requests, the JSON holds the count of
    steps and the CRC-32 of their maps, both the golden model's, and the saved state is the
    golden model's after those steps."""
    import numpy as np

    from cellsp.sim import GoldenModel
    from cellsp.sim.wire import maps_check

    path = tmp_path / "small.json"
    cfg = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                   stimulus_threshold=1)
    cfg.to_json(path)
    X = np.random.default_rng(4).random((11, 6, 6)) < 0.4     # batches of k and a short one
    np.save(tmp_path / "in.npy", X)
    code = main(["run", str(tmp_path / "in.npy"), str(tmp_path / "out"), "--config", str(path),
                 "--transport", "amaranth", "--cells-per-pe", "1", "--learn", "--no-outputs",
                 "--save-state", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0, out
    golden = GoldenModel(cfg)
    maps = golden.run(X, learn=True)
    result = json.loads((tmp_path / "out.json").read_text())
    assert result == {"steps": 11, "maps_check": f"0x{maps_check(maps):08x}", "learn": True,
                      "inputs": 11}
    assert f"0x{maps_check(maps):08x}" in out
    saved = GoldenModel.load(tmp_path / "state.npz").state()
    for name, value in golden.state().__dict__.items():
        assert np.array_equal(getattr(saved, name), value), name


def test_board_option_stands_for_the_boards_config_cells_per_pe_and_baud(tmp_path):
    """`--board` gives run/compare/verify what `cellsp build --board` built: the board's
    default config and cells per PE, and its UART's baud rate on a port given without one."""
    from cellsp.boards.boards import get_board
    from cellsp.host.cli import build_parser
    from cellsp.host.cli.options import hardware

    parser = build_parser()
    for name in ("icebreaker", "ulx3s-85f"):
        board = get_board(name)
        args = parser.parse_args(["compare", "--board", name, "--transport", "serial:/dev/x"])
        cfg, p, transport = hardware(args)
        assert cfg == board.default_config and p == board.default_cells_per_pe
        assert transport == f"serial:/dev/x@{board.baud}"
    args = parser.parse_args(["run", "in.npy", "out.npy", "--board", "ulx3s-85f",
                              "--transport", "serial:/dev/x@115200", "--cells-per-pe", "4"])
    assert hardware(args)[1:] == (4, "serial:/dev/x@115200")
    # a config file of its own: the board's cells per PE if it divides the columns
    path = tmp_path / "c.json"
    path.write_text(SPConfig(cell_shape=(8, 8), input_shape=(8, 8)).to_json())
    args = parser.parse_args(["verify", "--board", "ulx3s-85f", "--config", str(path)])
    cfg, p, transport = hardware(args)
    assert cfg.cell_shape == (8, 8) and p == 8 and transport is None
    # without a board nothing changes
    args = parser.parse_args(["verify", "--transport", "serial:/dev/x"])
    assert hardware(args) == (SPConfig(), 1, "serial:/dev/x")
    assert main(["run", "in.npy", "out.npy", "--board", "nope"]) == 2


def test_picking_a_serial_port_does_not_import_amaranth():
    """`cellsp run --board B --transport serial:PORT` reads the board's baud rate and default
    array from the board catalog and opens the port without loading Amaranth (a fresh
    interpreter, so nothing another test imported counts)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from cellsp.host.cli import build_parser\n"
        "from cellsp.host.cli.options import hardware\n"
        "import cellsp.host.serial_link, cellsp.host.targets\n"
        "args = build_parser().parse_args(['run', 'in.npy', 'out.npy', '--board', 'icebreaker',"
        " '--transport', 'serial:/dev/x'])\n"
        "assert hardware(args)[2] == 'serial:/dev/x@3000000'\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth')\n"
        "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
