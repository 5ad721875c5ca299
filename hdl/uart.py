"""A UART (8 data bits, no parity, 1 stop bit) between a 1-bit pin and a byte stream.

The bit period is a whole number of clock cycles, ``bit_cycles(clock_hz, baud)``: the nearest
integer to ``clock_hz / baud``. It is refused (``ValueError``) when it is below 4 cycles (the
receiver could not find the middle of a bit) or when the baud rate it gives is more than 2%
off the one asked for (the far end, running at the nominal rate, would drift by more than a
fifth of a bit over a frame). The iCEBreaker's 12 MHz clock and 3,000,000 baud give exactly 4.

A frame on the line: idle high, a start bit (low), bits 0..7 (LSB first), a stop bit (high).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["bit_cycles", "UARTReceiver", "UARTTransmitter"]

MIN_BIT_CYCLES = 4
MAX_BAUD_ERROR = 0.02


def bit_cycles(clock_hz: int, baud: int) -> int:
    """Clock cycles per bit for `baud` at `clock_hz`: round(clock_hz / baud), checked (see
    the module docstring); raises ValueError naming the clock, the baud rate and the result."""
    if clock_hz <= 0 or baud <= 0:
        raise ValueError(f"clock_hz ({clock_hz}) and baud ({baud}) must be positive")
    cycles = round(clock_hz / baud)
    if cycles < MIN_BIT_CYCLES:
        raise ValueError(
            f"a {clock_hz} Hz clock gives {clock_hz / baud:.2f} cycles per bit at {baud} baud; "
            f"the UART needs at least {MIN_BIT_CYCLES}: lower the baud rate to at most "
            f"{clock_hz // MIN_BIT_CYCLES} or raise the clock")
    actual = clock_hz / cycles
    error = abs(actual - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(
            f"a {clock_hz} Hz clock cannot make {baud} baud: the nearest divisor {cycles} gives "
            f"{actual:.0f} baud, {error:.1%} off (at most {MAX_BAUD_ERROR:.0%} is allowed); "
            f"pick a baud rate that divides the clock more closely")
    return cycles


class UARTReceiver(wiring.Component):
    """Bytes from the `rx` pin on the `data` stream; frames with a bad stop bit are dropped.

    Timing (`divisor` = ``bit_cycles(clock_hz, baud)``): the pin passes through a 2-flop
    synchroniser (2 cycles of latency). The first cycle the synchronised line is seen low
    starts a frame; the start bit is checked `divisor` // 2 cycles later (a line high again
    by then was a glitch: ignored) and each following bit is sampled `divisor` cycles after the
    previous one, so in the middle of each bit sent at the nominal rate. After the stop bit is
    sampled the receiver looks for the next start bit at once, so bytes sent back to back (or
    up to 2% fast) are all received.

    A received byte is offered on `data` from the cycle after its stop bit was sampled until
    taken. A byte that completes while the previous one is still not taken is dropped and
    counted in `overruns`. A stop bit sampled low drops the byte and counts one in
    `framing_errors`; the receiver then waits for the line to be high before it looks for a
    start bit again, so a line stuck low counts one error and nothing more, and the first
    frame after it is received. Both counters wrap around at 2**16.
    """

    rx: In(1, init=1)                  # the pin; idle high
    data: Out(stream.Signature(8))
    framing_errors: Out(16)
    overruns: Out(16)

    def __init__(self, clock_hz: int, baud: int):
        self.clock_hz, self.baud = clock_hz, baud
        self.divisor = bit_cycles(clock_hz, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1, stages=2)

        timer = Signal(range(self.divisor))
        bits = Signal(range(9))
        shift = Signal(8)
        done = Signal()                 # a byte with a good stop bit, this cycle

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bits.eq(0)]
                    with m.If(line):
                        m.next = "IDLE"          # high again in mid start bit: a glitch
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), shift.eq(Cat(shift[1:], line)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.comb += done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                # a frame ended low: wait for the idle level before the next start bit
                with m.If(line):
                    m.next = "IDLE"

        with m.If(done):
            with m.If(~self.data.valid | self.data.ready):
                m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
            with m.Else():
                m.d.sync += self.overruns.eq(self.overruns + 1)
        with m.Elif(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        return m


class UARTTransmitter(wiring.Component):
    """Bytes from the `data` stream sent on the `tx` pin.

    Timing (`divisor` = ``bit_cycles(clock_hz, baud)``): `tx` is a register, high when idle.
    A byte taken from `data` (``valid`` and ``ready`` in one cycle) starts its start bit on the
    next cycle; every bit, the stop bit included, lasts exactly `divisor` cycles. `ready` is
    high while idle and in the last cycle of a stop bit, so bytes offered back to back go out
    with no idle time between them (10 * `divisor` cycles a byte).
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)                 # the pin; idle high

    def __init__(self, clock_hz: int, baud: int):
        self.clock_hz, self.baud = clock_hz, baud
        self.divisor = bit_cycles(clock_hz, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        busy = Signal()
        timer = Signal(range(self.divisor))
        left = Signal(range(10))        # bits still to send after the one on the line
        shift = Signal(9)               # those bits, next one in bit 0: data then stop

        bit_ends = timer == 0
        m.d.comb += self.data.ready.eq(~busy | (bit_ends & (left == 0)))
        with m.If(busy):
            m.d.sync += timer.eq(timer - 1)
            with m.If(bit_ends & (left != 0)):
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1), left.eq(left - 1),
                             timer.eq(self.divisor - 1)]
            with m.Elif(bit_ends):
                m.d.sync += busy.eq(0)
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [busy.eq(1), self.tx.eq(0), shift.eq(Cat(self.data.payload, 1)),
                         left.eq(9), timer.eq(self.divisor - 1)]
        return m
