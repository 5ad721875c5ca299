"""Child processes that never outlive cellsp, and cached builds that are never left half-built.

Every tool cellsp starts (Verilator with its make and compilers, the model binaries, cocotb
runs, Yosys and nextpnr through Amaranth's build script, valgrind, a board programmer) goes
through this module:

- `popen` / `run` start a child in its own process group (``start_new_session``) and register
  it. When the child ends, or an exception (KeyboardInterrupt, `Terminated`) passes through
  `run`, the child's whole group is killed: make's compilers die with make.
- `managed()` does the same for the children that third-party code starts with the
  `subprocess` module (cocotb's runner, Amaranth's ``platform.build``): inside the block,
  ``subprocess.Popen`` is the registering class.
- `install_signal_handlers()` (called by the CLI) turns SIGTERM and SIGHUP into `Terminated`,
  a KeyboardInterrupt, so that they unwind like Ctrl-C: builds remove their temporary folders,
  children are killed, partial results are written.
- At interpreter exit every registered group still alive is killed.
- If cellsp itself dies without unwinding (SIGKILL, ``os._exit``, a signal with no handler), a
  small watchdog process (one per cellsp process, started with the first child) sees its pipe
  from cellsp close and kills every group cellsp had registered.

Cached builds (`cached_build`) happen in a temporary folder next to their final place, named
``<key>.tmp-<pid>-<random>``, and are renamed into place only when complete; the folder is
removed when the build fails or is interrupted, and a stale one left by a killed process (its
pid no longer running) is removed by the next build in the same cache folder. Lookups only
ever see complete folders.

One cache for the CLI, the tests and ``make``: ``$CELLSP_CACHE``, by default
``$XDG_CACHE_HOME/cellsp`` or ``~/.cache/cellsp`` (`cache_root`).

YoWASP's yosys and nextpnr are WebAssembly run by wasmtime inside their own Python processes
(the ``yowasp-*`` console scripts), children of Amaranth's ``sh`` build script: they are in
that script's process group and die with it.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

__all__ = ["Terminated", "install_signal_handlers", "popen", "run", "kill", "kill_all",
           "managed", "live_children", "cache_root", "cached_build", "clean_stale",
           "progress", "build_log", "environment", "TMP_MARK"]

TMP_MARK = ".tmp-"     # in the names of build folders under construction
_TMP_NAME = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")

_OriginalPopen = subprocess.Popen
_lock = threading.RLock()
_children: dict[int, subprocess.Popen] = {}     # pid (= process group) -> Popen
_watchdog: subprocess.Popen | None = None
_watchdog_pid = None      # the cellsp process the watchdog watches (a fork needs its own)

# The watchdog: reads "+PGID" / "-PGID" lines; when its stdin closes (cellsp exited or died,
# the kernel closes the pipe), kills every group still listed.
_WATCHDOG = r"""
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    try:
        (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    except ValueError:
        pass
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (see `install_signal_handlers`); `signum` says which. A
    KeyboardInterrupt, so that code which cleans up after Ctrl-C cleans up after these too."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP raise `Terminated` in the main thread (a no-op elsewhere, and for
    a signal that is ignored, e.g. SIGHUP under nohup)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)


# ----- the registry and the watchdog -----

def _tell_watchdog(line: str) -> None:
    global _watchdog, _watchdog_pid
    if sys.platform == "win32":
        return
    with _lock:
        if _watchdog is None or _watchdog_pid != os.getpid():
            try:
                _watchdog = _OriginalPopen(
                    [sys.executable, "-I", "-S", "-c", _WATCHDOG], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
                _watchdog_pid = os.getpid()
            except OSError:
                _watchdog = None
                return
        try:
            _watchdog.stdin.write(f"{line}\n".encode())
            _watchdog.stdin.flush()
        except (OSError, ValueError):
            pass


def _register(proc: subprocess.Popen) -> None:
    with _lock:
        _children[proc.pid] = proc
        _tell_watchdog(f"+{proc.pid}")


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _finish(proc: subprocess.Popen) -> None:
    """The child has exited (and been waited for): kill what is left of its group, forget it."""
    with _lock:
        if _children.pop(proc.pid, None) is None:
            return
        _killpg(proc.pid)
        _tell_watchdog(f"-{proc.pid}")


def kill(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group and reap the child."""
    _killpg(proc.pid)
    try:
        proc.kill()
    except OSError:
        pass
    try:
        _OriginalPopen.wait(proc, timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _finish(proc)


def kill_all() -> None:
    """Kill every registered child's group (at exit, or after an interruption)."""
    with _lock:
        procs = list(_children.values())
    for proc in procs:
        kill(proc)


def live_children() -> list[int]:
    """Pids of the registered children still running (for tests and diagnostics)."""
    with _lock:
        return [pid for pid, proc in _children.items() if proc.poll() is None]


atexit.register(kill_all)


class ManagedPopen(_OriginalPopen):
    """``subprocess.Popen`` that starts the child in its own session (so its process group is
    its own) and registers it; the group is killed when the child has been waited for."""

    def __init__(self, *args, **kwargs):
        if sys.platform != "win32" and kwargs.get("process_group") is None:
            kwargs["start_new_session"] = True
        super().__init__(*args, **kwargs)
        _register(self)

    def wait(self, timeout=None):
        try:
            code = super().wait(timeout)
        except BaseException as exc:
            if not isinstance(exc, subprocess.TimeoutExpired):
                kill(self)        # interrupted while waiting: the child goes too
            raise
        _finish(self)
        return code

    def poll(self):
        code = super().poll()
        if code is not None:      # reaped here: its group goes now, while its id is still ours
            _finish(self)
        return code

    def __exit__(self, exc_type, value, traceback):
        try:
            super().__exit__(exc_type, value, traceback)
        finally:
            if exc_type is not None and self.returncode is None:
                kill(self)


def popen(args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(args, **kwargs)``, the child in its own process group and registered:
    it dies with cellsp (see the module's documentation)."""
    return ManagedPopen(args, **kwargs)


def run(args, *, check: bool = False, timeout: float | None = None, input=None,
        capture_output: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a managed child: on any exception (a timeout, Ctrl-C,
    `Terminated`) the child's whole group is killed before the exception goes on."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with ManagedPopen(args, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except BaseException:
            kill(proc)
            raise
        code = proc.wait()
    if check and code:
        raise subprocess.CalledProcessError(code, args, stdout, stderr)
    return subprocess.CompletedProcess(args, code, stdout, stderr)


_managed_depth = 0


@contextmanager
def managed():
    """Inside the block, children started by any code through the `subprocess` module are
    managed children (their own process group, registered, killed when the block is left by
    an exception). Nests; the patch is process-wide while any block is active."""
    global _managed_depth
    started: list[subprocess.Popen] = []

    class _Tracked(ManagedPopen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    with _lock:
        _managed_depth += 1
        saved = subprocess.Popen
        subprocess.Popen = _Tracked
    try:
        yield
    except BaseException:
        for proc in started:
            kill(proc)
        raise
    finally:
        with _lock:
            _managed_depth -= 1
            subprocess.Popen = saved if _managed_depth else _OriginalPopen


@contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the duration of a block, for the tools that third-party
    code inside it starts with the process's own environment (cocotb's runner)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ----- the cache -----

def cache_root() -> Path:
    """The one cache of built models: $CELLSP_CACHE, else $XDG_CACHE_HOME/cellsp, else
    ~/.cache/cellsp."""
    if os.environ.get("CELLSP_CACHE"):
        return Path(os.environ["CELLSP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cellsp"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: Path) -> list[Path]:
    """Remove the temporary build folders in `folder` whose process is no longer running (a
    build killed with no chance to clean up); return them."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = _TMP_NAME.search(entry.name)
        if found and int(found.group(1)) != os.getpid() and not _running(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def progress(what: str, expected_s: float | None = None, every_s: float = 20.0,
             write: Callable[[str], None] | None = None):
    """Say on stderr that `what` started (with its expected duration if known), how long it
    has been running every `every_s` seconds, and how long it took."""
    write = write or (lambda line: print(line, file=sys.stderr, flush=True))
    start = time.monotonic()
    expect = ""
    if expected_s:
        expect = (f" (about {round(expected_s / 60)} min on 2 idle cores)" if expected_s >= 90
                  else f" (about {max(1, round(expected_s))} s on 2 idle cores)")
    write(f"cellsp: {what}{expect} ...")
    done = threading.Event()

    def tick():
        while not done.wait(every_s):
            write(f"cellsp: {what}: {time.monotonic() - start:.0f} s so far")

    thread = threading.Thread(target=tick, name="cellsp-progress", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        write(f"cellsp: {what}: stopped after {time.monotonic() - start:.0f} s")
        raise
    else:
        write(f"cellsp: {what}: done in {time.monotonic() - start:.0f} s")
    finally:
        done.set()
        thread.join(timeout=1.0)


def cached_build(final: Path, build: Callable[[Path], None], ready: str | None = None) -> Path:
    """Return `final`, building it first if it is not there: ``build(tmp)`` fills a new
    temporary folder next to `final` (same file system), which is renamed to `final` when
    `build` returns. On any exception (a failed build, Ctrl-C, `Terminated`) the temporary
    folder is removed; a build that wants its log kept on failure writes it to
    `build_log(final)`, beside the folder (moved into it on success, removed on an
    interruption). `ready`: a file inside
    that marks a complete build (the folder's existence is enough by default)."""
    marker = final / ready if ready else final
    if marker.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    tmp = final.parent / f"{final.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        build(tmp)
        if build_log(final).exists():
            shutil.move(str(build_log(final)), str(tmp / "build.log"))
        if marker.exists():
            shutil.rmtree(tmp, ignore_errors=True)   # another process built it meanwhile
        else:
            if final.exists():                      # an incomplete folder from an old version
                shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):    # interrupted: nothing to look at later
            build_log(final).unlink(missing_ok=True)
        if not marker.exists():
            raise
    return final


def build_log(final: Path) -> Path:
    """Where a build of `final` writes its log (beside it, so that a failed build's log
    outlives the removed temporary folder)."""
    return final.parent / f"{final.name}.log"


def tool_path(name: str) -> str:
    """The command that runs the console script `name` of this environment (YoWASP's yosys and
    nextpnr): the file beside this Python interpreter when it is there (the environment's bin
    folder need not be on PATH), else what PATH finds, else `name` itself."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)
