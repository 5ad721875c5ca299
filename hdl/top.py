"""The board gateware: the protocol engine and cell array behind a UART, at pin level.

    uart_rx pin -> UARTReceiver -> FIFO -> ProtocolEngine (+ CellArray) -> UARTTransmitter -> uart_tx pin

`BoardTop` is the same on every board; a board build wraps it with the platform's clock and
UART pins. `board_verilog` exports it with one Verilog module per kind of processing element
(as `cellsp.hdl.verilog` does for the engine), for the Verilator pty harness
(`cellsp.host.pty_link`) that tests this exact gateware without a board.
"""

import math

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout

from .array import CellArray
from .protocol import ProtocolEngine
from .uart import UARTReceiver, UARTTransmitter, bit_period
from .verilog import convert, pe_modules

__all__ = ["BoardTop", "board_verilog", "ICEBREAKER_CLOCK_HZ", "ICEBREAKER_BAUD"]

#: The iCEBreaker's 12 MHz oscillator, and the fastest baud rate its FT2232H USB UART can run
#: (exactly 4 cycles a bit).
ICEBREAKER_CLOCK_HZ = 12_000_000
ICEBREAKER_BAUD = 3_000_000


def rx_fifo_depth(geometry: ArrayGeometry) -> int:
    """Bytes the receive FIFO holds: the engine takes no byte while it executes a request or
    sends its reply, and a UART cannot pause the host, so the FIFO must hold everything the
    driver may have in flight then: a full window of STEP requests (`Driver.run`), or the
    longest request (a LOAD_CHUNK). A power of two (block RAM)."""
    lay = ProtocolLayout.for_geometry(geometry)
    frame = HEADER + TRAILER
    need = max(lay.reply_window * (frame + lay.step_request), frame + lay.max_payload)
    return 1 << (need - 1).bit_length()


class BoardTop(wiring.Component):
    """UART pins in front of the protocol engine and cell array for `geometry`.

    `clock_hz`: the clock the design runs at; `baud`: the UART's rate (``bit_period`` checks
    the pair: at least 4 cycles a bit, which may be a fraction). `frame_timeout_cycles`: a
    request frame cut off in the middle is dropped after this many cycles with no byte
    (default 10 ms, and at least 64 byte times). `array`: the cell array to use (for Verilog
    export, one built with `pe_modules`).

    Received bytes wait in a FIFO of ``rx_fifo_depth(geometry)`` bytes (the engine cannot
    take bytes while it works); a byte arriving when it is full is lost (the driver's CRC
    check and retries recover). Replies need no FIFO: the engine holds each reply byte
    until the transmitter takes it.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)

    def __init__(self, geometry: ArrayGeometry, clock_hz: int = ICEBREAKER_CLOCK_HZ,
                 baud: int = ICEBREAKER_BAUD, frame_timeout_cycles: int | None = None,
                 array: CellArray | None = None, batching: bool = True):
        self.geometry = geometry
        self.batching = batching      # the engine executes BATCH requests (ProtocolEngine)
        self.clock_hz, self.baud = clock_hz, baud
        self.bit_period = bit_period(clock_hz, baud)        # refuses a bad pair early
        if frame_timeout_cycles is None:
            frame_timeout_cycles = max(clock_hz // 100, math.ceil(64 * 10 * self.bit_period))
        self.frame_timeout_cycles = frame_timeout_cycles
        self.rx_fifo_depth = rx_fifo_depth(geometry)
        self.array = array
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = receiver = UARTReceiver(self.clock_hz, self.baud)
        m.submodules.uart_tx = transmitter = UARTTransmitter(self.clock_hz, self.baud)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self.rx_fifo_depth)
        m.submodules.engine = engine = ProtocolEngine(
            self.geometry, timeout=self.frame_timeout_cycles, array=self.array,
            batching=self.batching)

        m.d.comb += [receiver.rx.eq(self.uart_rx), self.uart_tx.eq(transmitter.tx)]
        # the receiver's stream into the FIFO (not ready when full: the receiver counts an
        # overrun), the FIFO into the engine
        wiring.connect(m, receiver.data, fifo.w_stream)
        wiring.connect(m, fifo.r_stream, engine.rx)
        wiring.connect(m, engine.tx, transmitter.data)
        return m


def board_verilog(geometry: ArrayGeometry, clock_hz: int = ICEBREAKER_CLOCK_HZ,
                  baud: int = ICEBREAKER_BAUD, name: str = "cellsp_board",
                  frame_timeout_cycles: int | None = None, batching: bool = True) -> str:
    """Verilog text of `BoardTop` (ports clk, rst, uart_rx, uart_tx): the PE modules, then the
    top module `name`; `batching`: the engine executes BATCH requests (as `Board.batching`)."""
    texts, modules = pe_modules(geometry, name)
    top = BoardTop(geometry, clock_hz, baud, frame_timeout_cycles,
                   array=CellArray(geometry, pe_modules=modules), batching=batching)
    texts.append(convert(top, name=name))
    return "\n".join(texts)
