"""A UART (8 data bits, no parity, 1 stop bit) between a 1-bit pin and a byte stream.

The bit period is ``bit_period(clock_hz, baud)``: exactly ``clock_hz / baud`` cycles, as a
reduced fraction N / D (25 MHz at 3,000,000 baud: 25/3 = 8.33 cycles). A `BitTimer` (a phase
accumulator: it falls by D each cycle and wraps up by N) puts every bit boundary within one
cycle of its ideal time, with no drift over a frame or a stream of back-to-back frames, so the
baud rate is exact on average; bits last floor(N / D) or ceil(N / D) cycles. When the clock is
a whole multiple of the baud rate (D = 1: the iCEBreaker's 12 MHz at 3 Mbaud is 4 cycles, the
ECPIX-5's 30 MHz 10) it is a plain down-counter and every bit lasts exactly N cycles. A period
below 4 cycles is refused (``ValueError``): the receiver could not find the middle of a bit.

A frame on the line: idle high, a start bit (low), bits 0..7 (LSB first), a stop bit (high).
"""

from fractions import Fraction

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["bit_period", "BitTimer", "UARTReceiver", "UARTTransmitter"]

MIN_BIT_CYCLES = 4


def bit_period(clock_hz: int, baud: int) -> Fraction:
    """Clock cycles per bit for `baud` at `clock_hz`, exactly: ``Fraction(clock_hz, baud)``.
    Raises ValueError, naming the clock, the baud rate and the shortfall, when it is below
    `MIN_BIT_CYCLES` (4)."""
    if clock_hz <= 0 or baud <= 0:
        raise ValueError(f"clock_hz ({clock_hz}) and baud ({baud}) must be positive")
    period = Fraction(clock_hz) / Fraction(baud)
    if period < MIN_BIT_CYCLES:
        cycles = f"{float(period):.2f}"
        if cycles == f"{MIN_BIT_CYCLES:.2f}":
            cycles = str(period)             # just below: show it exactly
        excess = float(MIN_BIT_CYCLES / period - 1) * 100
        raise ValueError(
            f"a {clock_hz} Hz clock gives {cycles} cycles per bit at {baud} baud, fewer than "
            f"the {MIN_BIT_CYCLES} the UART needs (the baud rate is {excess:.3g}% too high): "
            f"lower it to at most {clock_hz // MIN_BIT_CYCLES} baud or raise the clock to at "
            f"least {baud * MIN_BIT_CYCLES} Hz")
    return period


class BitTimer:
    """Bit boundaries `period` = N / D cycles apart on average (`period` a `Fraction`).

    `count` (range N) counts down by D every cycle; `tick` is high in the cycle it is below D,
    when it wraps to ``count + N - D`` instead (that sync assignment is added to `m` here; a
    later one, ``restart``, overrides it). `count` is the time to the next ideal boundary in
    units of 1/D cycle: a tick at cycle t stands for a boundary in [t, t + 1), so ticks fall on
    the floor of ideal times exactly N / D apart, never drifting. With D = 1 it is a plain
    down-counter: `tick` is ``count == 0`` and it reloads N - 1.
    """

    def __init__(self, m: Module, period: Fraction, name: str = "timer"):
        self.step, self.wrap = period.denominator, period.numerator
        self.count = Signal(range(self.wrap), name=name)
        if self.step == 1:
            self.tick = self.count == 0
            wrapped = self.wrap - 1
        else:
            self.tick = self.count < self.step
            wrapped = self.count + (self.wrap - self.step)
        m.d.sync += self.count.eq(Mux(self.tick, wrapped, self.count - self.step))

    def restart(self, cycles: Fraction):
        """The assignment that, made at cycle t, puts the next tick at cycle t + floor(`cycles`)
        and the later ones `period` apart from t + `cycles` (1 <= `cycles` <= `period`, a
        multiple of 1/D)."""
        units = (cycles - 1) * self.step
        assert units.denominator == 1 and 0 <= units < self.wrap, cycles
        return self.count.eq(int(units))


class UARTReceiver(wiring.Component):
    """Bytes from the `rx` pin on the `data` stream; frames with a bad stop bit are dropped.

    Timing (`period` = ``bit_period(clock_hz, baud)`` = N / D cycles): the pin passes through a
    2-flop synchroniser (2 cycles of latency). The first cycle s the synchronised line is seen
    low starts a frame; the start bit is checked at cycle s + floor(h), h = floor(N / 2) / D,
    about half a bit later (a line high again by then was a glitch: ignored), and bit k of the
    frame (data bits 1..8, the stop bit 9) at s + floor(h + k * N / D): in the middle of each
    bit sent at the nominal rate, within one cycle (exactly s + N // 2 + k * N when D = 1).
    After the stop bit is sampled the receiver looks for the next start bit at once, so bytes
    sent back to back (or up to 2% fast) are all received.

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
        self.period = bit_period(clock_hz, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1, stages=2)

        timer = BitTimer(m, self.period)     # free-running; restarted on each start edge
        half = Fraction(self.period.numerator // 2, self.period.denominator)
        bits = Signal(range(9))
        shift = Signal(8)
        done = Signal()                 # a byte with a good stop bit, this cycle

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.restart(half)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer.tick):
                    m.d.sync += bits.eq(0)
                    with m.If(line):
                        m.next = "IDLE"          # high again in mid start bit: a glitch
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer.tick):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer.tick):
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

    Timing (`period` = ``bit_period(clock_hz, baud)`` = N / D cycles): `tx` is a register,
    high when idle. A byte taken from `data` (``valid`` and ``ready`` in one cycle c) starts
    its start bit on the next cycle, and bit k of the stream from then on (k = 0 that start
    bit, 10 a frame) starts at cycle c + 1 + floor(k * N / D): within one cycle of its ideal
    time, bits of floor(N / D) or ceil(N / D) cycles (exactly N when D = 1). `ready` is high
    while idle and in the last cycle of a stop bit; a byte taken then follows with no idle time
    and the timing above runs on, so bytes offered back to back go out at exactly the baud
    rate (10 * N / D cycles a byte on average).
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)                 # the pin; idle high

    def __init__(self, clock_hz: int, baud: int):
        self.clock_hz, self.baud = clock_hz, baud
        self.period = bit_period(clock_hz, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = BitTimer(m, self.period)     # a tick in the last cycle of each bit
        busy = Signal()
        left = Signal(range(10))        # bits still to send after the one on the line
        shift = Signal(9)               # those bits, next one in bit 0: data then stop

        m.d.comb += self.data.ready.eq(~busy | (timer.tick & (left == 0)))
        with m.If(busy & timer.tick):
            with m.If(left != 0):
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1), left.eq(left - 1)]
            with m.Else():
                m.d.sync += busy.eq(0)
        with m.If(~busy):
            m.d.sync += timer.restart(self.period)     # for a start bit on the next cycle
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [busy.eq(1), self.tx.eq(0), shift.eq(Cat(self.data.payload, 1)),
                         left.eq(9)]
        return m
