"""Issue 18: every `cellsp` failure a user can cause or meet ends with exactly one line on
stderr, `cellsp CMD: error: WHAT FAILED; WHAT TO DO` (argparse's usage errors too: the same
one-line form, no usage text), exit status 2 and no traceback (unless --debug); paths and
options are checked before any model is built; a run that stops part-way writes what it
computed. Nothing here builds a model or synthesizes: a guard fails the test if anything tries.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cellsp.host.cli import main
from cellsp.host.cli.run import RUN_BLOCK
from cellsp.sim import GoldenModel, SPConfig
from .configs import TINY_THRESHOLD_1 as SMALL



@pytest.fixture
def files(tmp_path, monkeypatch):
    """A folder of good and bad files, as the working directory."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save("in.npy", rng.random((5, 16, 16)) < 0.4)
    np.save("small.npy", rng.random((5, 6, 6)) < 0.4)
    np.save("zero.npy", np.array(3))
    np.save("empty.npy", np.zeros((0, 16, 16), bool))
    np.save("float.npy", np.zeros((5, 16, 16)))
    bad = np.zeros((5, 16, 16), np.int64)
    bad[3, 2, 1] = 7
    np.save("nonbinary.npy", bad)
    np.save("shape.npy", np.zeros((5, 8, 8), bool))
    np.save("objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez("archive.npz", a=np.zeros((5, 16, 16), bool))
    Path("junk.npy").write_bytes(b"not numpy at all")
    Path("existing.npy").write_bytes(b"keep me")
    Path("existing.json").write_text("{}")
    Path("bad.json").write_text('{"winners": 12}')
    Path("broken.json").write_text("{")
    Path("afile").write_text("a file")
    os.mkdir("adir")
    os.mkdir("folder.npy")
    SMALL.to_json("small.json")
    GoldenModel(SPConfig()).save("default-state.npz")
    return tmp_path


@pytest.fixture
def guard(monkeypatch):
    """Every way to build a model, open a device, synthesize or benchmark, made to record the
    attempt (and fail)."""
    import cellsp.boards.build as build
    import cellsp.boards.sweep as sweep
    import cellsp.host.bench_fuzz as bench_fuzz
    import cellsp.host.bench_transport as bench_transport
    import cellsp.host.targets as targets
    import cellsp.sim.bench as bench
    import cellsp.host.verify as verify

    called = []

    def forbidden(name):
        def fail(*args, **kwargs):
            called.append(name)
            raise RuntimeError(f"{name} must not be reached")
        return fail

    for module, name in [(targets, "open_driver"), (targets, "verilator_link"),
                         (verify, "verify"), (build, "build_board"), (sweep, "bench_boards"),
                         (bench, "bench_golden"), (bench_transport, "bench_transport"),
                         (bench_fuzz, "bench_fuzz")]:
        monkeypatch.setattr(module, name, forbidden(name))
    return called


BAD = [
    # run: inputs
    ("run missing.npy o.npy", "INPUTS 'missing.npy' does not exist"),
    ("run adir o.npy", "INPUTS 'adir' is a folder"),
    ("run archive.npz o.npy", "is an .npz archive"),
    ("run zero.npy o.npy", "holds a single value (a 0-d array)"),
    ("run empty.npy o.npy", "holds no inputs"),
    ("run float.npy o.npy", "dtype float64"),
    ("run nonbinary.npy o.npy", "the first 7 at input 3, row 2, column 1"),
    ("run shape.npy o.npy", "expected (T, 16, 16)"),
    ("run junk.npy o.npy", "cannot read INPUTS 'junk.npy' as an .npy array"),
    ("run objects.npy o.npy", "cannot read INPUTS 'objects.npy'"),
    ("run small.npy o.npy", "--config FILE"),
    # run: outputs and state
    ("run in.npy nodir/o.npy", "the folder of OUTPUTS 'nodir/o.npy' does not exist"),
    ("run in.npy existing.npy", "exists; pass --force"),
    ("run in.npy existing", "OUTPUTS 'existing.npy' exists"),
    ("run in.npy folder.npy", "is a folder"),
    ("run in.npy o.npy --save-state nodir/s.npz", "the folder of --save-state"),
    ("run small.npy o.npy --state default-state.npz --config small.json --cells-per-pe 1",
     "saved with another config"),
    ("run in.npy o.npy --state missing.npz", "--state 'missing.npz' does not exist"),
    ("run in.npy o.npy --state adir", "--state 'adir' is a folder"),
    ("run in.npy o.npy --state junk.npy", "cannot load state"),
    # run: options
    ("run in.npy o.npy --config adir", "config file 'adir' is a folder"),
    ("run in.npy o.npy --config missing.json", "does not exist"),
    ("run in.npy o.npy --config bad.json", "winners = 12"),
    ("run in.npy o.npy --config broken.json", "not valid JSON"),
    ("run in.npy o.npy --transport bogus", "unknown transport 'bogus'"),
    ("run in.npy o.npy --transport serial:/dev/null@99999999999999999999", "baud rate"),
    ("run in.npy o.npy --transport serial:/dev/null@0", "baud rate"),
    ("run in.npy o.npy --transport serial:", "name the port"),
    ("run in.npy o.npy --cells-per-pe 0", "--cells-per-pe: expected an integer of at least 1"),
    ("run in.npy o.npy --cells-per-pe x", "expected an integer, got 'x'"),
    ("run in.npy o.npy --cells-per-pe 7", "must divide"),
    ("run in.npy o.npy --board nosuch", "unknown board 'nosuch'"),
    ("run in.npy", "the following arguments are required: OUTPUTS.npy"),
    ("run in.npy o.npy --bogus", "unrecognized arguments: --bogus"),
    # compare and demo
    ("compare --limit 5", "--limit: expected an integer of at least 10"),
    ("compare --limit -5", "--limit: expected an integer of at least 10"),
    ("compare --passes 0", "--passes: expected an integer of at least 1"),
    ("compare --out afile", "--out 'afile' is a file"),
    ("compare --out afile/report", "cannot be created"),
    ("compare --board nosuch", "unknown board"),
    ("compare --config adir", "is a folder"),
    ("compare --config small.json --cells-per-pe 2", "must divide"),
    ("demo --limit 9", "at least 10"),
    ("demo --passes 0", "at least 1"),
    ("demo --out afile", "is a file"),
    ("demo --cells-per-pe 0", "at least 1"),
    ("demo --target bogus", "unknown transport 'bogus'"),
    # verify
    ("verify --steps 0", "--steps: expected an integer of at least 1"),
    ("verify --steps -3", "at least 1"),
    ("verify --config adir", "is a folder"),
    ("verify --config missing.json", "does not exist"),
    ("verify --idle 1.5", "--idle: expected a number from 0 to 1"),
    ("verify --stall 1", "--stall: expected a number from 0 to 1"),
    ("verify --seed -1", "--seed"),
    ("verify --lanes 0", "--lanes"),
    ("verify --transport bogus", "unknown transport"),
    ("verify --sim bogus", "invalid choice"),
    # bench
    ("bench boards --board nosuch", "unknown board 'nosuch'"),
    ("bench golden --out nodir/x.json", "the folder of --out 'nodir/x.json' does not exist"),
    ("bench golden --out existing.json", "exists; pass --force"),
    ("bench golden --out adir", "is a folder"),
    ("bench golden --min-seconds 0", "--min-seconds: expected a positive number"),
    ("bench transport --rounds 0", "--rounds"),
    ("bench hdl --steps 0", "--steps"),
    ("bench fuzz --frames 0", "--frames: expected an integer of at least 1"),
    ("bench fuzz --target bogus", "invalid choice"),
    ("bench fuzz --seed -1", "--seed: expected an integer of at least 0"),
    ("bench nosuch", "invalid choice"),
    # build
    ("build --board nosuch", "unknown board"),
    ("build", "the following arguments are required: --board"),
    ("build --board icebreaker --cells-per-pe 0", "at least 1"),
    ("build --board icebreaker --cells-per-pe 7 --no-fit-check", "must divide"),
    ("build --board icebreaker --out afile", "is a file"),
    ("build --board icebreaker --config adir", "is a folder"),
    # config and the top level
    ("config adir", "config file 'adir' is a folder"),
    ("config missing.json", "does not exist"),
    ("config broken.json", "not valid JSON"),
    ("config bad.json", "winners = 12"),
    ("nosuch", "invalid choice: 'nosuch'"),
]


@pytest.mark.parametrize("argv, expected", BAD, ids=[a for a, _ in BAD])
def test_bad_arguments_end_in_one_line(files, guard, capsys, argv, expected):
    args = argv.split()
    code = main(args)
    err = capsys.readouterr().err
    lines = err.strip().split("\n")
    assert code == 2, err
    assert len(lines) == 1, err
    # a benchmark's own options are checked by its subcommand: `cellsp bench golden: error:`
    words = args[:2] if args[0] == "bench" and args[1] != "nosuch" else args[:1]
    command = "cellsp" if args[0] == "nosuch" else " ".join(["cellsp", *words])
    assert lines[0].startswith(f"{command}: error: "), err
    assert expected in lines[0], err
    assert "Traceback" not in err and "internal error" not in err
    assert not guard, f"reached {guard}"
    # nothing written, nothing replaced
    assert not Path("o.npy").exists() and Path("existing.npy").read_bytes() == b"keep me"
    assert not list(files.glob(".*.part"))


def test_no_command_is_one_line(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellsp: error: name a command (demo, ") and err.count("\n") == 1
    assert main(["--help"]) == 0


def test_existing_output_is_replaced_with_force(files, monkeypatch, capsys):
    _fake_driver(monkeypatch)
    assert main(["run", "small.npy", "existing.npy", "--config", "small.json",
                 "--cells-per-pe", "1", "--force"]) == 0
    assert np.load("existing.npy").shape == (5, 3, 3)


def test_errors_as_a_user_meets_them(files):
    """Through the `cellsp` entry point, as a user runs it: one line, exit 2; --debug shows the
    traceback."""
    exe = Path(sys.executable).with_name("cellsp")
    for argv, expected in [("run missing.npy o.npy", "does not exist"),
                           ("compare --limit 5", "at least 10"),
                           ("bench boards --board nosuch", "unknown board")]:
        done = subprocess.run([str(exe), *argv.split()], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([str(exe), "run", "missing.npy", "o.npy", "--debug"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" in done.stderr


# ------------------------------------------------------------------ devices and links


class _FakeDriver:
    """A driver over the golden model; `fail` (an exception) is raised by `run` once `after`
    inputs are done, with `partial` attached when `with_partial`."""

    def __init__(self, cfg, fail=None, after=None, with_partial=True):
        self.model = GoldenModel(cfg)
        self.fail, self.after, self.with_partial = fail, after, with_partial
        self.done = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def load_state(self, state):
        self.model.set_state(state)

    def read_state(self):
        return self.model.state()

    def run(self, X, *, learn, window=4, progress=None):
        if self.fail is not None and self.done + len(X) > self.after:
            k = self.after - self.done
            out = self.model.run(X[:k], learn=learn)
            self.done += k
            exc = self.fail
            if self.with_partial:
                exc.partial = (out, np.full(k, 70))
            raise exc
        out = self.model.run(X, learn=learn)
        self.done += len(X)
        if progress:
            progress(len(X))
        return out, np.full(len(X), 70)


def _fake_driver(monkeypatch, **kwargs):
    import cellsp.host.targets as targets

    drivers = []

    def open_driver(target, geometry, timeout=5.0, log=None):
        drivers.append(_FakeDriver(geometry.config, **kwargs))
        return drivers[-1]

    monkeypatch.setattr(targets, "open_driver", open_driver)
    return drivers


def _device_errors():
    from cellsp.host.driver import ConfigMismatch, DeviceError, DeviceTimeout
    from cellsp.host.serial_link import SerialPortError
    from cellsp.host.verilator_link import LinkError

    return [DeviceTimeout("no reply to STEP (seq 3) after 4 tries of 2.0 s: is the device "
                          "running and on this port?"),
            DeviceError("STEP (seq 3) refused: BAD_SEQ"),
            ConfigMismatch("the gateware was built from config 12 (4x4 cells), this host "
                           "uses 34 (3x3 cells): rebuild the gateware from this config, or "
                           "pass the config it was built from (--config FILE)"),
            LinkError("link 'x' process exited with code 1 (while reading); stderr: boom\nline"),
            SerialPortError("serial port '/dev/ttyUSB1' failed while reading: gone"),
            OSError(5, "Input/output error")]


@pytest.mark.parametrize("index", range(6))
def test_device_errors_on_connect_are_one_line(files, monkeypatch, capsys, index):
    import cellsp.host.targets as targets

    error = _device_errors()[index]

    def open_driver(*args, **kwargs):
        raise error

    monkeypatch.setattr(targets, "open_driver", open_driver)
    code = main(["run", "small.npy", "o.npy", "--config", "small.json", "--cells-per-pe", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().split("\n")) == 1, err
    assert err.startswith("cellsp run: error: ") and "Traceback" not in err
    assert "internal error" not in err and ("; " in err or "rebuild" in err)   # what to do
    assert not Path("o.npy").exists()


def test_a_broken_module_still_ends_in_one_line(files, monkeypatch, capsys):
    """The error path does not fail in turn when a module it names cannot be imported."""
    import cellsp.host.targets as targets

    def open_driver(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(targets, "open_driver", open_driver)
    monkeypatch.setitem(sys.modules, "cellsp.host.verilator_link", None)
    code = main(["run", "small.npy", "o.npy", "--config", "small.json", "--cells-per-pe", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().split("\n")) == 1, err
    assert err.startswith("cellsp run: error: internal error: RuntimeError: something unforeseen")


@pytest.mark.parametrize("with_partial", [True, False])
def test_run_failing_part_way_writes_what_it_computed(files, monkeypatch, capsys, with_partial):
    """A link failure after k of T inputs writes the k outputs (the driver's `partial` for the
    block in progress, or the whole blocks done before it) and says so; before, it discarded
    all of them."""
    from cellsp.host.verilator_link import LinkError

    T, k = RUN_BLOCK + 300, RUN_BLOCK + 123
    X = np.random.default_rng(1).random((T, 6, 6)) < 0.4
    np.save("many.npy", X)
    _fake_driver(monkeypatch, fail=LinkError("link 'x' process exited with code 9 (while "
                                             "reading)"), after=k, with_partial=with_partial)
    code = main(["run", "many.npy", "out", "--config", "small.json", "--cells-per-pe", "1",
                 "--learn", "--save-state", "s"])
    err = capsys.readouterr().err
    kept = k if with_partial else RUN_BLOCK
    assert code == 2 and len(err.strip().split("\n")) == 1, err
    assert f"after {kept:,} of {T:,} inputs" in err and "out.npy" in err, err
    assert "the state was not saved" in err and not Path("s.npz").exists()
    out = np.load("out.npy")
    assert out.shape == (kept, 3, 3)
    assert (out == GoldenModel(SMALL).run(X[:kept], learn=True)).all()


def test_run_interrupted_writes_what_it_computed(files, monkeypatch, capsys):
    T = RUN_BLOCK * 2 + 5
    np.save("many.npy", np.random.default_rng(2).random((T, 6, 6)) < 0.4)
    _fake_driver(monkeypatch, fail=KeyboardInterrupt(), after=RUN_BLOCK + 7,
                 with_partial=False)
    code = main(["run", "many.npy", "out.npy", "--config", "small.json", "--cells-per-pe", "1"])
    err = capsys.readouterr().err
    assert code == 130, err
    assert err.strip() == (f"cellsp run: interrupted after {RUN_BLOCK:,} of {T:,} inputs; "
                           f"wrote those {RUN_BLOCK:,} outputs to out.npy")
    assert np.load("out.npy").shape == (RUN_BLOCK, 3, 3)


def test_run_terminated_writes_what_it_computed(files, monkeypatch, capsys):
    """SIGTERM (a `Terminated` KeyboardInterrupt from cellsp.sim.processes): the same, with
    the shell's status for it, 143."""
    import signal

    from cellsp.sim.processes import Terminated

    np.save("many.npy", np.random.default_rng(3).random((40, 6, 6)) < 0.4)
    _fake_driver(monkeypatch, fail=Terminated(signal.SIGTERM), after=25)
    code = main(["run", "many.npy", "out.npy", "--config", "small.json", "--cells-per-pe", "1"])
    err = capsys.readouterr().err
    assert code == 143, err
    assert err.strip() == ("cellsp run: terminated by SIGTERM after 25 of 40 inputs; wrote "
                           "those 25 outputs to out.npy")


def test_run_names_the_file_it_wrote(files, monkeypatch, capsys):
    """`wrote X` names the real file: `numpy.save` appends .npy, and so does the name printed
    (before, `wrote out` was printed for out.npy); the state file gets .npz the same way."""
    _fake_driver(monkeypatch)
    code = main(["run", "small.npy", "out", "--config", "small.json", "--cells-per-pe", "1",
                 "--save-state", "state"])
    out = capsys.readouterr().out
    assert code == 0
    assert "wrote out.npy and state.npz" in out
    assert sorted(p.name for p in files.glob("out*")) == ["out.npy"]
    assert GoldenModel.load("state.npz").config == SMALL


def test_verify_exit_status_error_2_mismatch_1(files, capsys):
    code = main(["verify", "--sim", "amaranth", "--config", "missing.json"])
    captured = capsys.readouterr()
    assert code == 2 and len(captured.err.strip().split("\n")) == 1
    assert captured.out.strip().splitlines()[-1] == "verify: 0 steps, 0 mismatches"


# ------------------------------------------------------------------ atomic writes


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    from cellsp.host.files import atomic_path, save_npy

    path = tmp_path / "x.npy"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
    save_npy(path, np.arange(3))
    assert (np.load(path) == np.arange(3)).all() and sorted(tmp_path.iterdir()) == [path]
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_demo_checks_its_options_before_any_work(tmp_path, monkeypatch):
    """The demo refuses a bad report folder, pass count or digit count before it loads a model
    (the guard is not needed: every refusal comes first)."""
    import cellsp.host.demo as demo
    from cellsp.host.files import UsageError
    from cellsp.sim.geometry import ArrayGeometry

    cfg = SPConfig()
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        demo.run_demo(None, ArrayGeometry.for_config(cfg), out_dir=tmp_path / "f")
    with pytest.raises(UsageError, match="at least one learning pass"):
        demo.load_demo_data(cfg, passes=0)
    with pytest.raises(UsageError, match="at least 10"):
        demo.load_demo_data(cfg, limit=-5)
    # a readout needs two classes of digits to train on (`--limit 5` crashed in scikit-learn)
    monkeypatch.setattr(demo, "load_digits_binary",
                        lambda shape: (np.zeros((30,) + tuple(shape), bool), np.zeros(30, int)))
    with pytest.raises(UsageError, match="all 0s: the readout needs two kinds"):
        demo.load_demo_data(cfg, limit=12)
    assert not (tmp_path / "r").exists()
