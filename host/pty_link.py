"""The board gateware (`cellsp.hdl.top.BoardTop`) compiled by Verilator behind a pseudo-terminal.

The pins of the exact board design are driven bit-serially by a small C++ harness, so a host
opens it like a board's USB UART (``open_driver("serial:/dev/pts/N", geometry)``) and talks
to it through pyserial and the kernel's tty layer, with no board attached:

    host (pyserial) <-> /dev/pts/N <-> pty master <-> harness: bits on uart_rx / from uart_tx

The harness (``PTY_MAIN_CPP``) opens a pseudo-terminal (posix_openpt, grantpt, unlockpt, raw
mode), prints the slave's path on stdout and runs the clock. The bit period is
``--bit-cycles N`` or ``--bit-cycles N/D`` cycles (a fraction, timed like the gateware's
``cellsp.hdl.uart.BitTimer``). Bytes read from the master go out on ``uart_rx`` as 8N1 frames,
back to back: bit k of a run of frames sent without a pause starts floor(k * N / D) cycles
after the run's first start bit, so the rate is exact on average. ``uart_tx`` is decoded (bit k
sampled floor((N // 2) / D + k * N / D) cycles after each start edge, in the middle of the bit)
and the bytes are written to the master. The cycle loop is compiled C++; Python is not involved
per cycle or per byte.

Idle: while bits move on either pin, or for 200,000 cycles after they last did (so a step
computed between request and reply runs at full speed, and a cut-off frame reaches the
engine's default timeout promptly), the clock runs freely, checking the pty every 256 cycles.
Then the harness blocks in ``poll()`` for up to 10 ms at a time and ticks 1000 cycles between
polls, so an idle harness uses almost no CPU (the design's own timers run slow while idle).

It exits when its stdin is closed (the parent closed it, or died: the kernel closes the pipe)
or when its parent process is gone (checked at every idle poll, and every 65,536 cycles while
busy). Each byte written to its stdin
asks for one line of counters on stdout (see `PtyLink.stats`). The harness keeps a descriptor
of the slave open itself, so clients may open and close the port any number of times.

Binaries are cached like `VerilatorLink`'s (the build machinery is shared), per content hash.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from fractions import Fraction
from typing import Callable

from cellsp.sim import processes

from .verilator_link import LinkError, VerilatorLink

__all__ = ["PTY_MAIN_CPP", "PtyLink", "board_pty_link"]

# Amaranth's plain 1-bit ports keep their names; the wrapper gives the C++ a fixed module.
_PTY_WRAPPER_TEMPLATE = """\
module {wrapper} (input clk, input rst, input uart_rx, output uart_tx);
    {top} dut (.clk(clk), .rst(rst), .uart_rx(uart_rx), .uart_tx(uart_tx));
endmodule
"""

PTY_MAIN_CPP = r"""// cellsp pty harness: a Verilated UART design behind a pseudo-terminal.
// Usage: <binary> --bit-cycles N[/D] [--parent-pid PID]: N / D clock cycles a bit (N >= 2D).
// Prints the pty slave's path on stdout, then one line of counters per byte written to stdin.
// Exits 0 when stdin is closed.
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
#include <termios.h>
#include <unistd.h>

#include "Vlink.h"
#include "verilated.h"

static const uint64_t kCheckEvery = 256;       // cycles between non-blocking pty reads
static const uint64_t kQuietCycles = 200000;   // run freely this long after the last bit
static const uint64_t kIdleCycles = 1000;      // cycles between idle polls
static const int kIdlePollMs = 10;             // the longest idle poll
static const size_t kInputCap = 1 << 20;       // stop reading the pty beyond this backlog

static void die(const char* what) {
    fprintf(stderr, "cellsp-pty: %s: %s\n", what, strerror(errno));
    exit(2);
}

// The bit period: n / d clock cycles, n >= 2d. Bit boundaries are timed by a phase: the time
// to the next one in units of 1/d cycle, falling by d a cycle; the cycle it is below d holds a
// boundary (the floor of its ideal time) and it wraps up by n. (With d = 1: a down-counter.)
struct Period {
    uint64_t n = 0, d = 1;
    // Advance `phase` by a cycle; whether a boundary fell in this cycle.
    bool tick(uint64_t& phase) const {
        if (phase < d) { phase += n - d; return true; }
        phase -= d;
        return false;
    }
    uint64_t ceil(uint64_t bits) const { return (bits * n + d - 1) / d; }   // cycles of `bits`
};

// The bytes from the host, sent bit-serially on uart_rx (8N1, LSB first).
struct Serializer {
    Period p;
    std::vector<uint8_t> queue;
    size_t head = 0;
    int bit = -1;          // bit of the frame on the line (0 start .. 9 stop), -1 idle
    uint64_t phase;        // to the end of that bit; runs on across back-to-back frames
    uint16_t frame = 0;
    uint64_t sent = 0;
    uint64_t line_cycles = 0;   // cycles with a frame on the line
    explicit Serializer(Period period) : p(period), phase(period.n - period.d) {}
    bool busy() const { return bit >= 0 || head < queue.size(); }
    int level() {
        if (bit < 0) {
            if (head == queue.size()) {
                phase = p.n - p.d;     // a start bit from the next cycle lasts a full period
                return 1;
            }
            frame = static_cast<uint16_t>((queue[head++] << 1) | (1u << 9));
            if (head == queue.size()) { queue.clear(); head = 0; }
            bit = 0;
        }
        int out = (frame >> bit) & 1;
        line_cycles++;
        if (p.tick(phase) && ++bit == 10) { bit = -1; sent++; }
        return out;
    }
};

// uart_tx decoded: a start edge, then each bit sampled in its middle.
struct Deserializer {
    Period p;
    bool receiving = false, wait_high = false;
    uint64_t phase = 0;    // to the middle of the next bit
    int k = 0;             // that bit (0 start .. 9 stop)
    uint16_t bits = 0;
    uint64_t framing_errors = 0, received = 0;
    explicit Deserializer(Period period) : p(period) {}
    bool busy() const { return receiving; }
    // Returns the byte completed this cycle, or -1.
    int sample(int level) {
        if (!receiving) {
            if (wait_high) { wait_high = level == 0; return -1; }
            if (level) return -1;
            receiving = true;
            phase = p.n / 2;   // the start edge is this cycle: its middle half a period on
            k = 0;
            bits = 0;
        }
        if (!p.tick(phase)) return -1;
        bits |= static_cast<uint16_t>(level << k);
        if (k == 0 && level) { receiving = false; return -1; }   // a glitch
        if (k++ < 9) return -1;
        receiving = false;
        if (!level) { framing_errors++; wait_high = true; return -1; }
        received++;
        return (bits >> 1) & 0xFF;
    }
};

static bool read_master(int master, Serializer& ser) {
    uint8_t buf[4096];
    bool got = false;
    while (ser.queue.size() - ser.head < kInputCap) {
        ssize_t k = read(master, buf, sizeof buf);
        if (k > 0) {
            ser.queue.insert(ser.queue.end(), buf, buf + k);
            got = true;
            continue;
        }
        // EIO: no slave open (cannot happen while we hold one); EAGAIN: nothing there
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != EIO)
            die("reading the pty");
        break;
    }
    return got;
}

static void write_master(int master, std::vector<uint8_t>& out) {
    size_t done = 0;
    while (done < out.size()) {
        ssize_t k = write(master, out.data() + done, out.size() - done);
        if (k > 0) { done += static_cast<size_t>(k); continue; }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die("writing the pty");
        break;   // the client is not reading: keep the rest, like a UART with no one listening
    }
    out.erase(out.begin(), out.begin() + static_cast<long>(done));
}

// Read stdin: EOF ends the harness; each byte asks for a line of counters.
static void serve_stdin(uint64_t cycles, const Serializer& ser, const Deserializer& des) {
    uint8_t buf[64];
    ssize_t k = read(0, buf, sizeof buf);
    if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) exit(0);
    for (ssize_t i = 0; i < k; i++) {
        printf("cycles %llu rx_bytes %llu rx_line_cycles %llu tx_bytes %llu "
               "tx_framing_errors %llu\n",
               static_cast<unsigned long long>(cycles), static_cast<unsigned long long>(ser.sent),
               static_cast<unsigned long long>(ser.line_cycles),
               static_cast<unsigned long long>(des.received),
               static_cast<unsigned long long>(des.framing_errors));
    }
    fflush(stdout);
}

// poll() the pty master and stdin for up to timeout_ms; serve what is ready. Exit when the
// parent has gone (stdin at EOF, or we were re-parented because it died).
static void check(int master, Serializer& ser, const Deserializer& des, uint64_t cycles,
                  long parent, int timeout_ms) {
    if (parent && getppid() != parent) exit(0);
    struct pollfd fds[2] = {{master, POLLIN, 0}, {0, POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die("poll");
    }
    if (fds[0].revents & (POLLERR | POLLNVAL)) {
        fprintf(stderr, "cellsp-pty: the pty master failed\n");
        exit(2);
    }
    if (fds[0].revents & POLLIN) read_master(master, ser);
    if (fds[1].revents) serve_stdin(cycles, ser, des);
}

int main(int argc, char** argv) {
    Period period{0, 0};
    long parent = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bit-cycles") == 0 && i + 1 < argc) {
            char* end = nullptr;
            period.n = strtoull(argv[++i], &end, 10);
            period.d = *end == '/' ? strtoull(end + 1, &end, 10) : 1;
            if (*end != '\0') period.d = 0;
        } else if (strcmp(argv[i], "--parent-pid") == 0 && i + 1 < argc) {
            parent = atol(argv[++i]);
        } else {
            fprintf(stderr, "cellsp-pty: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (period.d == 0 || period.n < 2 * period.d) {
        fprintf(stderr, "cellsp-pty: --bit-cycles N or N/D (N >= 2D > 0) is required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0) die("posix_openpt");
    if (grantpt(master) != 0) die("grantpt");
    if (unlockpt(master) != 0) die("unlockpt");
    const char* name = ptsname(master);
    if (!name) die("ptsname");
    // Hold the slave open: without any open slave, reads of the master fail with EIO and
    // poll() reports a hang-up at once, so clients could not come and go.
    int slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) die("opening the pty slave");
    struct termios raw;
    if (tcgetattr(slave, &raw) != 0) die("tcgetattr");
    cfmakeraw(&raw);   // bytes as they are: no echo, no line editing, no CR/LF mapping
    if (tcsetattr(slave, TCSANOW, &raw) != 0) die("tcsetattr");
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    printf("%s\n", name);
    fflush(stdout);

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vlink>(context.get());
    Serializer ser(period);
    Deserializer des(period);
    std::vector<uint8_t> out;

    top->clk = 0;
    top->rst = 1;
    top->uart_rx = 1;
    top->eval();
    uint64_t cycles = 0;
    for (int i = 0; i < 4; i++, cycles++) {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    }
    top->rst = 0;

    uint64_t last_bit = cycles, last_tx_byte = cycles, quiet_ticks = 0, write_at = 0;
    for (;;) {
        top->uart_rx = ser.level();
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        cycles++;
        int byte = des.sample(top->uart_tx);
        if (byte >= 0) {
            out.push_back(static_cast<uint8_t>(byte));
            last_tx_byte = cycles;
        }
        bool moving = ser.busy() || des.busy();
        if (moving) last_bit = cycles;
        // hand the reply over once uart_tx has been idle for a byte time (or it is large);
        // if the client does not read, retry a little later rather than every cycle
        if (!out.empty() && cycles >= write_at &&
            (out.size() >= 4096 || (!des.busy() && cycles - last_tx_byte > period.ceil(10)))) {
            write_master(master, out);
            write_at = cycles + 4096;
        }

        if (cycles - last_bit < kQuietCycles) {
            if (cycles % kCheckEvery == 0) {
                read_master(master, ser);
                if (cycles % (kCheckEvery * 256) == 0) check(master, ser, des, cycles, parent, 0);
            }
            quiet_ticks = 0;
        } else if (++quiet_ticks >= kIdleCycles) {
            // idle: nothing on the pins for a while; wait for the host (or the parent)
            check(master, ser, des, cycles, parent, kIdlePollMs);
            quiet_ticks = 0;
        }
    }
}
"""


class PtyLink:
    """A Verilog `BoardTop` (module `top` in `verilog_text`, pins ``uart_rx``/``uart_tx``) in the
    pty harness; `bit_cycles` is its UART bit period in clock cycles, an int or a `Fraction`
    (``cellsp.hdl.uart.bit_period``), at least 2.

    ``open()`` starts the harness (building it first if needed: 15-25 s cold for a tiny array
    on 2 cores, cached afterwards) and returns the path of its pty, to open like a serial port;
    ``close()`` stops it. Use as a context manager: ``with PtyLink(...) as port:``.
    `verilog_text` may be a function with a `key` that identifies its text (see
    `VerilatorLink`); `describe` and `expected_s` go into the build's progress lines.
    """

    def __init__(self, verilog_text: str | Callable[[], str], top: str,
                 bit_cycles: int | Fraction, name: str = "pty", key: str | None = None,
                 describe: str | None = None, expected_s: float | None = None):
        self.bit_cycles = Fraction(bit_cycles)
        if self.bit_cycles < 2:
            raise ValueError(f"a pty link needs at least 2 cycles a bit, not {self.bit_cycles}")
        self.link = VerilatorLink(verilog_text, top, name, main_cpp=PTY_MAIN_CPP,
                                  wrapper_template=_PTY_WRAPPER_TEMPLATE, key=key,
                                  describe=describe, expected_s=expected_s)
        self.name = name
        self.port: str | None = None
        self._proc: subprocess.Popen | None = None

    def at_bit_cycles(self, bit_cycles: int | Fraction) -> PtyLink:
        """The same harness binary (same design, same cache entry) run at another bit period:
        a host at the wrong baud rate, say."""
        other = PtyLink(self.link._verilog, self.link.top, bit_cycles, self.name, self.link.key,
                        self.link.describe, self.link.expected_s)
        other.link = self.link
        return other

    def is_built(self) -> bool:
        """Whether the harness binary is in the cache already."""
        return self.link.is_built()

    def build(self):
        """Build (or find in the cache) the harness binary; return its path."""
        return self.link.build()

    def open(self, timeout: float = 10.0) -> str:
        """Start the harness; return the pty slave's path (e.g. ``/dev/pts/3``)."""
        if self._proc is not None:
            raise LinkError(f"pty link {self.name!r} is already open")
        binary = self.build()
        self._proc = processes.popen(
            [str(binary), "--bit-cycles", str(self.bit_cycles), "--parent-pid",
             str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        line = self._line(timeout)
        if not line.startswith("/"):
            raise self._failed(f"printed {line!r} instead of its pty path")
        self.port = line
        return line

    def _line(self, timeout: float) -> str:
        """One line of the harness's stdout, within `timeout` seconds."""
        proc = self._proc
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise self._failed(f"said nothing within {timeout} s")
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                raise self._failed("closed its output")
            data += chunk
        return data.decode().strip()

    def _failed(self, what: str) -> LinkError:
        """Stop the harness; the error, with its exit code and stderr."""
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        stderr = proc.stderr.read().decode(errors="replace").strip()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
        return LinkError(f"pty harness {self.name!r} {what} (exit code {code})"
                         + (f"; stderr: {stderr[-2000:]}" if stderr else ""))

    def stats(self, timeout: float = 5.0) -> dict[str, int]:
        """The harness's counters: clock cycles so far, bytes sent on uart_rx (`rx_bytes`) and
        the cycles they took on the line (`rx_line_cycles`: a run of k back-to-back bytes takes
        floor(10 * k * N / D)), bytes decoded from uart_tx, and uart_tx frames with a bad stop
        bit (always 0 for a sound design)."""
        if self._proc is None:
            raise LinkError(f"pty link {self.name!r} is not open")
        try:
            self._proc.stdin.write(b"s")
        except BrokenPipeError:
            raise self._failed("has exited") from None
        words = self._line(timeout).split()
        return {key: int(value) for key, value in zip(words[::2], words[1::2])}

    def close(self, timeout: float = 5.0) -> int:
        """Stop the harness (it exits when its stdin closes; killed after `timeout` s); return
        its exit code. Raises `LinkError` if it had failed on its own."""
        proc, self._proc = self._proc, None
        self.port = None
        if proc is None:
            return 0
        proc.stdin.close()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = 0              # it did not stop by itself, but it has not failed either
        stderr = proc.stderr.read().decode(errors="replace").strip()
        proc.stdout.close()
        proc.stderr.close()
        if code != 0:
            raise LinkError(f"pty harness {self.name!r} exited with code {code}"
                            + (f"; stderr: {stderr[-2000:]}" if stderr else ""))
        return code

    def __enter__(self) -> str:
        return self.port if self._proc is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def board_pty_link(geometry, clock_hz: int | None = None, baud: int | None = None,
                   frame_timeout_cycles: int | None = None, log=None) -> PtyLink:
    """The board gateware (`BoardTop`) for `geometry` in the pty harness (iCEBreaker clock and
    baud rate by default); built once per config, geometry and HDL source."""
    from cellsp.hdl.top import ICEBREAKER_BAUD, ICEBREAKER_CLOCK_HZ, board_verilog
    from cellsp.hdl.sources import gateware_key
    from cellsp.hdl.uart import bit_period

    clock_hz = ICEBREAKER_CLOCK_HZ if clock_hz is None else clock_hz
    baud = ICEBREAKER_BAUD if baud is None else baud
    period = bit_period(clock_hz, baud)
    cfg = geometry.config
    parts = ("cellsp_board", clock_hz, baud, frame_timeout_cycles)
    link = PtyLink(lambda: board_verilog(geometry, clock_hz, baud, name="cellsp_board",
                                         frame_timeout_cycles=frame_timeout_cycles),
                   "cellsp_board", period,
                   name=f"cellsp-board-{cfg.hash[:8]}-p{geometry.cells_per_pe}",
                   key=gateware_key("board", geometry, *map(str, parts),
                                    modules=("cellsp.hdl.verilog", "cellsp.hdl.top")),
                   describe=f"building the Verilator pty harness of the board gateware "
                            f"({cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells, "
                            f"{geometry.cells_per_pe} per PE), once per config")
    return link
