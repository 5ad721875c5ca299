"""The board gateware (`cellsp.hdl.top.BoardTop`) compiled by Verilator behind a pseudo-terminal.

The pins of the exact board design are driven bit-serially by a small C++ harness, so a host
opens it like a board's USB UART (``open_driver("serial:/dev/pts/N", geometry)``) and talks
to it through pyserial and the kernel's tty layer, with no board attached:

    host (pyserial) <-> /dev/pts/N <-> pty master <-> harness: bits on uart_rx / from uart_tx

The harness (``host/harness/pty_main.cpp`` with the shared ``harness.h``) opens a
pseudo-terminal (posix_openpt, grantpt, unlockpt, raw mode), prints the slave's path on stdout and runs the clock. The bit period is
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
or when its parent process is gone (checked at every idle poll, and every 4,096 cycles while
busy). Each byte written to its stdin asks for one line of counters on stdout (see
`PtyLink.stats`), answered at the next such check: the cycle count is exact to 4,096
cycles. The harness keeps a descriptor of the slave open itself, so clients may open and close
the port any number of times.

Binaries are built and cached by `cellsp.host.verilator_build`, like `VerilatorLink`'s.
"""

from __future__ import annotations

import copy
import os
import select
import subprocess
import time
from fractions import Fraction
import re
from pathlib import Path
from typing import Callable

from cellsp.boards.boards import Board
from cellsp.boards.netlist import (PINS_MODULE, board_netlist, cell_model_folder,
                                   netlist_model_key)
from cellsp.hdl.sources import gateware_key
from cellsp.hdl.top import ICEBREAKER_BAUD, ICEBREAKER_CLOCK_HZ, board_verilog
from cellsp.hdl.uart import bit_period
from cellsp.sim import processes
from cellsp.sim.config import SPConfig
from cellsp.sim.geometry import ArrayGeometry

from .verilator_build import NETLIST_HARNESS, PTY_HARNESS, Harness, HarnessModel, harness_file
from .verilator_link import LinkError

__all__ = ["PtyLink", "board_pty_link", "board_netlist_pty_link", "cell_model_sources"]


def _checked_bit_cycles(bit_cycles: int | Fraction) -> Fraction:
    """The bit period as a `Fraction`; a `ValueError` below 2 cycles (the harness's limit)."""
    period = Fraction(bit_cycles)
    if period < 2:
        raise ValueError(f"a pty link needs at least 2 cycles a bit, not {period}")
    return period


class PtyLink:
    """A Verilog `BoardTop` (module `top` in `verilog_text`, pins ``uart_rx``/``uart_tx``) in the
    pty harness; `bit_cycles` is its UART bit period in clock cycles, an int or a `Fraction`
    (``cellsp.hdl.uart.bit_period``), at least 2.

    ``open()`` starts the harness (building it first if needed: 15-25 s cold for a tiny array
    on 2 cores, cached afterwards) and returns the path of its pty, to open like a serial port;
    ``close()`` stops it. Use as a context manager: ``with PtyLink(...) as port:``.
    `verilog_text` may be a function with a `key` that identifies its text (see
    `VerilatorLink`); `describe` and `expected_s` go into the build's progress lines.
    `harness`, `sources` and `flags`: see `HarnessModel` (a netlist's harness and its cell
    models: `board_netlist_pty_link`).
    """

    def __init__(self, verilog_text: str | Callable[[], str], top: str,
                 bit_cycles: int | Fraction, name: str = "pty", key: str | None = None,
                 describe: str | None = None, expected_s: float | None = None, *,
                 harness: Harness = PTY_HARNESS, sources: dict[str, str] | None = None,
                 flags: tuple[str, ...] = ()):
        self.bit_cycles = _checked_bit_cycles(bit_cycles)
        self.model = HarnessModel(harness, verilog_text, top, name, key=key,
                                  describe=describe or f"building the pty harness {name!r}",
                                  expected_s=expected_s, sources=sources, flags=flags)
        self.name = name
        self.port: str | None = None
        self._proc: subprocess.Popen | None = None

    def at_bit_cycles(self, bit_cycles: int | Fraction) -> PtyLink:
        """The same harness binary (same design, same cache entry) run at another bit period:
        a host at the wrong baud rate, say."""
        other = copy.copy(self)
        other.bit_cycles = _checked_bit_cycles(bit_cycles)
        other.port = other._proc = None
        return other

    def is_built(self) -> bool:
        """Whether the harness binary is in the cache already."""
        return self.model.is_built()

    def build(self) -> Path:
        """Build (or find in the cache) the harness binary; return its path."""
        return self.model.build()

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


def board_pty_link(geometry: ArrayGeometry, clock_hz: int | None = None,
                   baud: int | None = None,
                   frame_timeout_cycles: int | None = None, batching: bool = True) -> PtyLink:
    """The board gateware (`BoardTop`) for `geometry` in the pty harness (iCEBreaker clock and
    baud rate by default; `batching`: the engine executes BATCH requests, as
    `Board.batching`); built once per config, geometry and HDL source. A build prints its
    progress on stderr."""
    clock_hz = ICEBREAKER_CLOCK_HZ if clock_hz is None else clock_hz
    baud = ICEBREAKER_BAUD if baud is None else baud
    period = bit_period(clock_hz, baud)
    cfg = geometry.config
    parts = ("cellsp_board", clock_hz, baud, frame_timeout_cycles) + (() if batching
                                                                      else ("no BATCH",))
    link = PtyLink(lambda: board_verilog(geometry, clock_hz, baud, name="cellsp_board",
                                         frame_timeout_cycles=frame_timeout_cycles,
                                         batching=batching),
                   "cellsp_board", period,
                   name=f"cellsp-board-{cfg.hash[:8]}-p{geometry.cells_per_pe}",
                   key=gateware_key("board", geometry, *map(str, parts),
                                    modules=("cellsp.hdl.verilog", "cellsp.hdl.top")),
                   describe=f"building the Verilator pty harness of the board gateware "
                            f"({cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells, "
                            f"{geometry.cells_per_pe} per PE), once per config")
    return link


#: Verilator options for a netlist with the vendor cell models: their include folder, and no
#: lint of the vendors' code (unused ports, widths, multiple drivers of a block RAM's array)
NETLIST_FLAGS = ("-Icells", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "--no-timing")


def cell_model_sources(family: str) -> dict[str, str]:
    """The simulation models of `family`'s primitives as build-folder files: Yosys's
    ``cells_sim.v`` and what it includes, in ``cells/``, with these changes: Verilator models
    no high impedance, so the pad models drive no 'z' (the iCE40 SB_IO's clock enable is its
    input; the ECP5 TRELLIS_IO of an input does not drive its pin and its T is its input);
    for ECP5 the block RAM model ``host/harness/ecp5_dp16kd.v`` replaces Yosys's black box
    DP16KD."""
    folder = cell_model_folder(family)
    sources = {f"cells/{path.name}": path.read_text()
               for path in sorted(folder.glob("*.vh"))}
    cells = (folder / "cells_sim.v").read_text()
    if family == "ice40":
        # Verilator has no high-impedance inputs: an SB_IO's clock enable is connected (the
        # netlist ties it to 1), so its test for an unconnected one goes
        cells, found = re.subn(r"CLOCK_ENABLE \|\| CLOCK_ENABLE === 1'bz", "CLOCK_ENABLE",
                               cells)
        if found != 1:
            raise LinkError("YoWASP Yosys's ice40/cells_sim.v has changed: its SB_IO clock "
                            "enable test was not found")
    if family == "ecp5":
        cells, found = re.subn(r"\(\* blackbox \*\)\s*module DP16KD\(.*?^endmodule", "",
                               cells, flags=re.S | re.M)
        if found != 1:
            raise LinkError("YoWASP Yosys's ecp5/cells_sim.v has no black box DP16KD to "
                            "replace with host/harness/ecp5_dp16kd.v")
        sources["cells/ecp5_dp16kd.v"] = harness_file("ecp5_dp16kd.v")
        # Verilator has no high impedance either: an input pad does not drive its pin (the
        # netlist's top port is an input), and the netlist connects every pad's T
        io = sources["cells/common_sim.vh"]
        io, found_pad = re.subn(r"(if \(DIR == \"INPUT\"\) begin\s*)assign B = 1'bz;", r"\1",
                                io)
        io, found_t = re.subn(r"if \(T === 1'bz\) T_pd = 1'b0; else T_pd = T;", "T_pd = T;", io)
        if found_pad != 1 or found_t != 1:
            raise LinkError("YoWASP Yosys's ecp5/common_sim.vh has changed: its TRELLIS_IO "
                            "model was not found")
        sources["cells/common_sim.vh"] = io
    sources["cells/cells_sim.v"] = cells
    return sources


def board_netlist_pty_link(board: Board, config: SPConfig, cells_per_pe: int,
                           synth_options: tuple[str, ...] | None = None) -> PtyLink:
    """The netlist of `board`'s build of `config` (`cellsp.boards.netlist.board_netlist`:
    what Yosys hands to nextpnr) with the vendor's cell models, in the pty harness at the
    board's bit period. The netlist is synthesised (cached) only when the harness binary has
    to be built; both print their progress on stderr."""
    synth_options = tuple(board.synth_options if synth_options is None else synth_options)
    geometry = board.geometry(config, cells_per_pe)
    h, w = config.cell_shape
    options = f", {' '.join(synth_options)}" if synth_options else ""
    return PtyLink(
        lambda: board_netlist(board, config, cells_per_pe, synth_options).verilog_text(),
        PINS_MODULE, bit_period(board.clock_hz, board.baud),
        name=f"cellsp-netlist-{board.name}-{config.hash[:8]}-p{cells_per_pe}",
        key=netlist_model_key(board, geometry, synth_options),
        describe=f"building the Verilator pty harness of the {board.name} netlist ({h}x{w} "
                 f"cells, {cells_per_pe} per PE{options}), once per config",
        harness=NETLIST_HARNESS, sources=cell_model_sources(board.device.family),
        flags=NETLIST_FLAGS)
