"""No stray processes, no half-built caches, and cache keys that need no Verilog.

- `cellsp` killed by SIGINT, SIGTERM, SIGHUP (and SIGKILL) while Verilator compiles a model
  (the cocotb array of `cellsp verify` and the protocol link of `cellsp run`): afterwards no
  process it started is left, and no half-built folder in the cache (before cellsp.sim.processes:
  make, verilator_bin and cc1plus went on under pid 1, and the model cache kept a half-built
  folder).
- `cellsp.sim.processes`: run/popen/managed kill a child's whole group, the watchdog kills it
  when its parent is SIGKILLed, cached builds are atomic and clean up after a killed build.
- The cache key of a model is computed without generating its Verilog (nor importing
  Amaranth), and changes with the config and with any gateware source.

CELLSP_TEST_COMMAND (e.g. "python launch.py OTHER_CHECKOUT") runs the signal tests against
another checkout's CLI instead of this one's.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cellsp.hdl import sources, verilog
from cellsp.host.array_verilator import VerilatorArraySim
from cellsp.host.pty_link import board_pty_link
from cellsp.host.targets import verilator_link
from cellsp.host.verilator_build import LINK_HARNESS, PTY_HARNESS, model_folder
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim import processes
from cellsp.sim.config import SPConfig
from .configs import TINY

COMPILERS = {"cc1plus", "verilator_bin", "make", "g++", "c++", "ld", "as", "perl"}


# ----- /proc helpers -----

def _stat(pid: int) -> tuple[str, int, str] | None:
    """(comm, ppid, start time) of a process, or None if it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in "ZX":
        return None
    return comm, int(fields[1]), fields[19]


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """{pid: (comm, start time)} of every living descendant of `root`."""
    children: dict[int, list[int]] = {}
    info = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found:
                children.setdefault(found[1], []).append(int(entry))
                info[int(entry)] = (found[0], found[2])
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = info[child]
            todo.append(child)
    return out


def _alive(pids: dict[int, tuple[str, str]]) -> list[str]:
    """The processes of `pids` still running (the same process: same start time)."""
    left = []
    for pid, (comm, started) in pids.items():
        found = _stat(pid)
        if found and found[2] == started:
            left.append(f"{pid} {comm}")
    return left


def _cellsp_command() -> list[str]:
    other = os.environ.get("CELLSP_TEST_COMMAND")
    return shlex.split(other) if other else [sys.executable, "-m", "cellsp.host.cli"]


def _half_built(cache: Path) -> list[str]:
    """Anything in the cache that is not a complete build: temporary folders, and model
    folders without their binary."""
    bad = []
    for path in cache.rglob("*"):
        if processes.TMP_MARK in path.name or "cellsp-run-" in path.name:
            bad.append(str(path.relative_to(cache)))
    for folder in (cache / "verilator").glob("*") if (cache / "verilator").exists() else []:
        if folder.is_dir() and not any(f.is_file() and os.access(f, os.X_OK)
                                       and f.suffix == "" for f in folder.iterdir()):
            bad.append(str(folder.relative_to(cache)))
    return bad


def _default_signals() -> None:
    """In the child before it starts cellsp: SIGINT, SIGTERM and SIGHUP back to their
    defaults, whatever the test run inherited."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _signal_when(args: list[str], env: dict, comm: str, signum: int, stderr_path: Path,
                 within: float) -> tuple[int, list[str]]:
    """Start ``cellsp ARGS``; as soon as a descendant named `comm` runs, send `signum` to
    cellsp alone. Returns cellsp's exit code and the descendants seen before the signal that
    still run after cellsp has exited (all of them are killed before returning)."""
    with open(stderr_path, "wb") as stderr:
        # a shell that starts jobs in the background ignores SIGINT in them, nohup ignores
        # SIGHUP, and children inherit that (cellsp leaves an ignored signal ignored); cellsp
        # is started as a terminal would start it, with every signal's default
        proc = subprocess.Popen(_cellsp_command() + args, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True,
                                preexec_fn=_default_signals)
    seen: dict[int, tuple[str, str]] = {}
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and proc.poll() is None:
            now = _descendants(proc.pid)
            seen.update(now)
            if any(name == comm for name, _ in now.values()):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no {comm} started within {within} s (exit code {proc.poll()}): "
                        f"{stderr_path.read_text()[-2000:]}")
        time.sleep(0.3)
        seen.update(_descendants(proc.pid))
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=60)
        # the watchdog acts on the pipe's close: give it a moment after a SIGKILL
        deadline = time.monotonic() + (10 if signum == signal.SIGKILL else 5)
        while _alive(seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        return code, _alive(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in seen:         # do not leave them to the next test, whatever happened
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# ----- cellsp killed during a Verilator build -----

@pytest.mark.slow
@pytest.mark.parametrize("command, signum", [
    ("verify", signal.SIGINT), ("verify", signal.SIGTERM), ("run", signal.SIGTERM),
    ("run", signal.SIGHUP), ("verify", signal.SIGKILL)],
    ids=["verify-INT", "verify-TERM", "run-TERM", "run-HUP", "verify-KILL"])
def test_signal_during_verilator_build_leaves_nothing(tmp_path, command, signum):
    cache = tmp_path / "cache"
    config = tmp_path / "tiny.json"
    TINY.to_json(config)
    if command == "verify":
        args = ["verify", "--steps", "1", "--config", str(config)]
    else:
        np.save(tmp_path / "x.npy", np.zeros((1, 6, 6), dtype=bool))
        args = ["run", "--config", str(config), "--cells-per-pe", "1", str(tmp_path / "x.npy"),
                str(tmp_path / "out.npy")]
    env = {**os.environ, "CELLSP_CACHE": str(cache)}
    code, left = _signal_when(args, env, "cc1plus", signum, tmp_path / "stderr", within=240)
    stderr_text = (tmp_path / "stderr").read_text()
    assert code != 0
    assert not left, f"still running after cellsp exited: {left}"
    if signum == signal.SIGKILL:
        # no chance to clean up: the next build removes the dead process's folder
        processes.clean_stale(cache / "verilator")
    assert not _half_built(cache), f"left in the cache: {_half_built(cache)}"
    if signum != signal.SIGKILL:
        assert "Traceback" not in stderr_text, stderr_text[-3000:]
        assert "building the Verilator model" in stderr_text     # progress, not silence


@pytest.mark.slow
def test_sigterm_during_a_cocotb_run_leaves_nothing(tmp_path):
    """The model in the user's cache (built once if needed), killed while it runs."""
    config = tmp_path / "tiny.json"
    TINY.to_json(config)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    code, left = _signal_when(["verify", "--steps", "100000", "--config", str(config)], env,
                              "cellsp_array", signal.SIGTERM, tmp_path / "stderr", within=600)
    assert code != 0
    assert not left, f"still running after cellsp exited: {left}"
    assert list((tmp_path / "tmp").iterdir()) == []      # its work folder too
    assert "Traceback" not in (tmp_path / "stderr").read_text()


# ----- the process machinery -----

def test_run_kills_the_whole_group_on_timeout():
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run(["sh", "-c", "sleep 601 & sleep 602 & wait"], timeout=0.5)
    assert _gone("sleep 60")
    assert processes.live_children() == []


def test_run_kills_grandchildren_left_by_a_finished_child():
    done = processes.run(["sh", "-c", "sleep 611 >/dev/null & echo done"], stdout=subprocess.PIPE)
    assert done.returncode == 0 and done.stdout.strip() == b"done"
    assert _gone("sleep 611")


def test_managed_children_of_third_party_code_die_with_an_exception():
    with pytest.raises(KeyboardInterrupt):
        with processes.managed():
            child = subprocess.Popen(["sh", "-c", "sleep 621 & sleep 622"])
            time.sleep(0.2)
            assert subprocess.Popen is not processes._OriginalPopen
            raise KeyboardInterrupt
    assert subprocess.Popen is processes._OriginalPopen
    assert _gone("sleep 62") and child.poll() is not None


def test_watchdog_kills_the_children_of_a_sigkilled_parent(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys, time
        from cellsp.sim import processes
        child = processes.popen(["sh", "-c", "sleep 631 & sleep 632"])
        print(child.pid, flush=True)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30)
    assert parent.returncode == -signal.SIGKILL
    assert _gone("sleep 63")


def test_sigterm_becomes_terminated_and_cleans_up(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from cellsp.sim import processes
        processes.install_signal_handlers()

        def build(tmp):
            processes.run(["sh", "-c", "touch {tmp_path}/started; sleep 641 & sleep 642"])

        try:
            processes.cached_build(Path({str(tmp_path / "cache" / "model")!r}), build)
        except processes.Terminated as exc:
            print("terminated", exc.signum, flush=True)
            raise SystemExit(3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3 and out.split() == ["terminated", str(int(signal.SIGTERM))]
    assert list((tmp_path / "cache").iterdir()) == []
    assert _gone("sleep 64")


def _gone(pattern: str, within: float = 10.0) -> bool:
    """Whether no process whose command line starts with `pattern` runs (waiting up to
    `within` seconds for killed ones to go)."""
    deadline = time.monotonic() + within
    while _sleepers(pattern) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _sleepers(pattern)


def _sleepers(pattern: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd.startswith(pattern) and _stat(int(entry)):
                found.append(f"{entry} {cmd}")
    return found


# ----- cached builds -----

def test_cached_build_is_atomic(tmp_path):
    final = tmp_path / "kind" / "key"
    calls = []

    def build(tmp):
        calls.append(tmp)
        assert tmp.parent == final.parent and processes.TMP_MARK in tmp.name
        assert not final.exists()
        (tmp / "binary").write_text("x")

    assert processes.cached_build(final, build, ready="binary") == final
    assert (final / "binary").read_text() == "x"
    assert processes.cached_build(final, build, ready="binary") == final
    assert len(calls) == 1 and sorted(p.name for p in final.parent.iterdir()) == ["key"]


def test_failed_build_keeps_only_its_log(tmp_path):
    final = tmp_path / "kind" / "key"

    def build(tmp):
        processes.build_log(final).write_text("compiler said no")
        (tmp / "half").write_bytes(b"x" * 1000)
        raise RuntimeError("failed")

    with pytest.raises(RuntimeError):
        processes.cached_build(final, build)
    assert [p.name for p in final.parent.iterdir()] == ["key.log"]

    def interrupted(tmp):
        processes.build_log(final).write_text("half a log")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        processes.cached_build(final, interrupted)
    assert list(final.parent.iterdir()) == []


def test_stale_folder_of_a_killed_build_is_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()                             # a pid that no longer runs
    kind = tmp_path / "kind"
    stale = kind / f"other{processes.TMP_MARK}{dead.pid}-0a1b2c3d"
    live = kind / f"other{processes.TMP_MARK}{os.getppid()}-0a1b2c3d"   # a running process's
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "obj").write_bytes(b"x" * 100)
    processes.cached_build(kind / "key", lambda tmp: (tmp / "bin").write_text("x"), ready="bin")
    assert not stale.exists() and live.exists()


def test_one_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("CELLSP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert processes.cache_root() == Path.home() / ".cache" / "cellsp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert processes.cache_root() == tmp_path / "xdg" / "cellsp"
    monkeypatch.setenv("CELLSP_CACHE", str(tmp_path / "mine"))
    assert processes.cache_root() == tmp_path / "mine"
    assert model_folder("k") == tmp_path / "mine" / "verilator" / "k"   # every Verilator model
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()   # make uses it too
    assert not [line for line in makefile.splitlines()
                if "CELLSP_CACHE" in line and not line.lstrip().startswith("#")]


def test_progress_lines(monkeypatch):
    lines = []
    with processes.progress("building a thing", expected_s=120, every_s=0.05,
                            write=lines.append):
        time.sleep(0.2)
    assert lines[0] == "cellsp: building a thing (about 2 min on 2 idle cores) ..."
    assert any("s so far" in line for line in lines[1:-1])
    assert lines[-1].startswith("cellsp: building a thing: done in")


# ----- cache keys without Verilog -----

def _no_verilog(*args, **kwargs):
    raise AssertionError("the Verilog was generated to compute a cache key")


def test_cached_link_opens_without_generating_verilog(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLSP_CACHE", str(tmp_path))
    monkeypatch.setattr(verilog, "engine_verilog", _no_verilog)
    link = verilator_link(ArrayGeometry.for_config(TINY))
    assert not link.is_built()
    folder = link.model.folder
    folder.mkdir(parents=True)
    (folder / link.name).write_text("a cached binary")
    assert link.is_built() and link.build() == folder / link.name


def test_cache_hit_imports_no_amaranth(tmp_path):
    script = textwrap.dedent("""
        import sys
        from cellsp.sim.config import SPConfig
        from cellsp.sim.geometry import ArrayGeometry
        from cellsp.host.targets import verilator_link
        from cellsp.host.array_verilator import VerilatorArraySim
        cfg = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1)
        link = verilator_link(ArrayGeometry.for_config(cfg))
        link.is_built()
        VerilatorArraySim(ArrayGeometry.for_config(cfg)).model_key()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "amaranth"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "CELLSP_CACHE": str(tmp_path)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _keys(geometry):
    return (verilator_link(geometry).model.folder.name,
            VerilatorArraySim(geometry).model_key(),
            board_pty_link(geometry).model.folder.name)


#: the protocol engine's files: the engine's key follows its imports to each of them
ENGINE_FILES = ["hdl/frames.py", "hdl/frame_receiver.py", "hdl/dispatcher.py", "hdl/replies.py",
                "hdl/protocol.py"]


@pytest.mark.parametrize("source", ["hdl/pe.py", *ENGINE_FILES, "sim/wire.py",
                                    "sim/config.py", "hdl/top.py"])
def test_key_changes_with_a_gateware_source(monkeypatch, source):
    geometry = ArrayGeometry.for_config(TINY)
    before = _keys(geometry)
    assert _keys(geometry) == before                       # stable
    real = sources._read
    package, name = source.split("/")
    edited = lambda path: real(path) + (b"\n# edited\n" if path.name == name and  # noqa: E731
                                        path.parent == sources._package_dir(package) else b"")
    monkeypatch.setattr(sources, "_read", edited)
    after = _keys(geometry)
    changed = [a != b for a, b in zip(before, after)]
    if source == "hdl/top.py":
        assert changed == [False, False, True]      # only the board's gateware reads it
    elif source == "sim/wire.py" or source in ENGINE_FILES:
        assert changed[0] and changed[2]            # the engine's gateware
    else:
        assert all(changed), source


@pytest.mark.parametrize("harness_file, changed", [
    ("harness.h", [True, False, True]), ("link_main.cpp", [True, False, False]),
    ("cellsp_pty_wrapper.v", [False, False, True])])
def test_key_changes_with_a_harness_file(monkeypatch, harness_file, changed):
    """Editing a harness's C++ or Verilog builds the models that use it anew."""
    geometry = ArrayGeometry.for_config(TINY)
    before = _keys(geometry)
    for harness in (LINK_HARNESS, PTY_HARNESS):
        files = dict(harness.files)
        if harness_file in files:
            files[harness_file] += "// edited\n"
        monkeypatch.setitem(harness.__dict__, "files", files)
    assert [a != b for a, b in zip(before, _keys(geometry))] == changed


def test_key_changes_with_the_config_and_geometry():
    base = _keys(ArrayGeometry.for_config(TINY))
    other = SPConfig.from_dict({**TINY.to_dict(), "perm_inc": TINY.perm_inc + 1})
    assert all(a != b for a, b in zip(base, _keys(ArrayGeometry.for_config(other))))
    assert all(a != b for a, b in zip(base, _keys(ArrayGeometry.for_config(TINY,
                                                                           cells_per_pe=3))))


def test_key_changes_with_a_tool_version(monkeypatch):
    geometry = ArrayGeometry.for_config(TINY)
    before = sources.gateware_key("engine", geometry)
    real = sources._tool_versions
    monkeypatch.setattr(sources, "_tool_versions",
                        lambda packages: [v + ".1" for v in real(packages)])
    assert sources.gateware_key("engine", geometry) != before
