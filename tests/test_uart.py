"""The UART (cellsp.hdl.uart) in Amaranth's simulator: the receiver fed line waveforms made in
Python (at the nominal rate, 2% fast or slow, with framing errors and a stuck-low line), the
transmitter's pin decoded and its timing checked, and the two back to back in a loop; at whole
bit periods (4 and 13 cycles) and at the ULX3S's fractional 25 MHz / 3 Mbaud (25/3 cycles)."""

import gc
import math
import random
from fractions import Fraction

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from cellsp.hdl.uart import UARTReceiver, UARTTransmitter, bit_period

ICEBREAKER = (12_000_000, 3_000_000)      # 4 cycles a bit
SLOWER = (13_000_000, 1_000_000)         # 13 cycles a bit
ULX3S = (25_000_000, 3_000_000)           # 25/3 = 8.33 cycles a bit: a fractional period
ODD = (12_000_000, 921_600)              # 625/48 = 13.02 cycles a bit
CLOCKS = pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER, ULX3S],
                                 ids=["div4", "div13", "div25_3"])


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """The 10 line levels of one 8N1 frame."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def waveform(frames, period: Fraction, rate: float = 1.0, idle: int = 0, gap_bits: float = 0.0):
    """Line level per clock cycle for `frames` (lists of bit levels) sent back to back (plus
    `gap_bits` of idle between frames), at `rate` times the nominal baud rate: bit k of the
    stream starts at cycle idle + k * period / rate, rounded down, as a far end with its own
    clock would send it (exact arithmetic at rate 1)."""
    levels = [1] * idle
    t = Fraction(idle) if rate == 1 else float(idle)
    period = period if rate == 1 else period / rate
    for bits in frames:
        for level in bits:
            t += period
            levels += [level] * (int(t) - len(levels))
        if gap_bits:
            t += gap_bits * period
        levels += [1] * (int(t) - len(levels))
    return levels + [1] * math.ceil(12 * period)     # time for the last byte to come out


def receive(levels, clock_baud, ready=None):
    """Run the receiver on `levels`; return (bytes received, framing errors, overruns).
    `ready(cycle)` says whether the byte stream is taken that cycle (always by default)."""
    taken, framing, overruns = receive_taken(levels, clock_baud,
                                             ready or (lambda cycle: True))
    return bytes(byte for _, byte in taken), framing, overruns


@CLOCKS
def test_receiver_takes_random_bytes_back_to_back(clock_baud):
    data = random.Random(1).randbytes(40)
    period = bit_period(*clock_baud)
    got, framing, overruns = receive(waveform([frame_bits(b) for b in data], period, idle=7),
                                     clock_baud)
    assert (got, framing, overruns) == (data, 0, 0)


@pytest.mark.parametrize("rate", [0.98, 1.02], ids=["2pc_slow", "2pc_fast"])
@CLOCKS
def test_receiver_tolerates_a_far_end_2_percent_off(clock_baud, rate):
    data = random.Random(2).randbytes(30) + b"\x00\xff\x55\xaa"
    period = bit_period(*clock_baud)
    # back to back: the receiver must resynchronise on every start bit
    got, framing, _ = receive(waveform([frame_bits(b) for b in data], period, rate, idle=3),
                              clock_baud)
    assert (got, framing) == (data, 0)


def narrow_waveform(data: bytes, period: Fraction, idle: int = 5):
    """Back-to-back frames of `data` whose data bits hold their level only within one cycle of
    their middles and the opposite level elsewhere (start bits: low until one cycle past the
    middle, then high; stop bits: high). The level of cycle t is the line's at the end of the
    cycle, u = t + 1 - idle in stream time: bit b spans (b * period, (b + 1) * period]."""
    bits = [b for byte in data for b in frame_bits(byte)]
    levels = [1] * idle
    for t in range(idle, idle + math.floor(len(bits) * period)):
        u = t + 1 - idle
        b = math.ceil(u / period) - 1
        middle = (b + Fraction(1, 2)) * period
        if b % 10 == 0:
            level = int(u > middle + 1)
        elif b % 10 == 9:
            level = 1
        else:
            level = bits[b] ^ (abs(u - middle) > 1)
        levels.append(level)
    return levels + [1] * math.ceil(12 * period)


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER, ULX3S, ODD],
                         ids=["div4", "div13", "div25_3", "div625_48"])
def test_receiver_samples_each_bit_within_a_cycle_of_its_middle(clock_baud):
    data = random.Random(8).randbytes(60)
    got, framing, _ = receive(narrow_waveform(data, bit_period(*clock_baud)), clock_baud)
    assert (got, framing) == (data, 0)


@CLOCKS
def test_framing_error_drops_the_byte_and_is_counted(clock_baud):
    period = bit_period(*clock_baud)
    good = b"\x12\x34\xfe"
    frames = [frame_bits(0x5A, stop=0), [1]] + [frame_bits(b) for b in good]
    got, framing, _ = receive(waveform(frames, period, idle=5), clock_baud)
    assert (got, framing) == (good, 1)


def test_a_stuck_low_line_counts_one_error_then_recovers():
    period = bit_period(*ICEBREAKER)
    good = b"\x00\x81\x7e"
    frames = [[0] * 200, [1] * 3] + [frame_bits(b) for b in good]    # 20 frames' time low
    got, framing, _ = receive(waveform(frames, period, idle=2), ICEBREAKER)
    assert (got, framing) == (good, 1)


@pytest.mark.parametrize("clock_baud", [SLOWER, ULX3S], ids=["div13", "div25_3"])
def test_a_short_glitch_is_not_a_start_bit(clock_baud):
    period = bit_period(*clock_baud)
    levels = [1] * 20 + [0] * 3 + [1] * 40      # low for less than half a bit
    levels += waveform([frame_bits(0xC3)], period)
    assert receive(levels, clock_baud)[:2] == (b"\xc3", 0)


def test_a_byte_not_taken_in_time_is_counted_as_overrun():
    period = bit_period(*ICEBREAKER)
    levels = waveform([frame_bits(b) for b in b"\x01\x02\x03"], period)
    # nobody takes a byte until the third one is in: the first is kept, the others dropped
    got, _, overruns = receive(levels, ICEBREAKER, ready=lambda c: c > 35 * period)
    assert (got, overruns) == (b"\x01", 2)


def transmit(data: bytes, clock_baud, offered=None):
    """Run the transmitter with `data` offered on its stream (when `offered(cycle)` says so,
    always by default); return the pin level per cycle, the first cycle being the cycle after
    the first byte was taken."""
    dut = UARTTransmitter(*clock_baud)
    quiet_cycles = math.ceil(12 * dut.period)
    levels = []

    async def bench(ctx):
        pending = list(data)
        cycle = 0
        started = False
        quiet = 0
        while pending or quiet < quiet_cycles:
            offer = bool(pending) and (offered is None or offered(cycle))
            ctx.set(dut.data.valid, offer)
            ctx.set(dut.data.payload, pending[0] if offer else 0)
            _, _, ready, pin = await ctx.tick().sample(dut.data.ready, dut.tx)
            if started:
                levels.append(pin)
            if offer and ready:
                pending.pop(0)
                started = True
            quiet = quiet + 1 if not pending else 0
            cycle += 1
        levels.append(ctx.get(dut.tx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return levels


def decode(levels, period: Fraction):
    """Bytes from a pin waveform, with the cycle each frame starts: after each start edge,
    bit k is read floor((k + 1/2) * period) cycles later; asserts 8N1 framing."""
    out, starts = [], []
    i = 0
    while i < len(levels):
        if levels[i]:
            i += 1
            continue
        bits = [levels[i + math.floor((k + Fraction(1, 2)) * period)] for k in range(10)]
        assert bits[0] == 0 and bits[9] == 1, f"bad frame at cycle {i}: {bits}"
        out.append(sum(b << k for k, b in enumerate(bits[1:9])))
        starts.append(i)
        i += math.floor(Fraction(19, 2) * period) + 1        # past the stop bit's middle
    return bytes(out), starts


@CLOCKS
def test_transmitter_sends_random_bytes_back_to_back(clock_baud):
    data = random.Random(3).randbytes(40)
    period = bit_period(*clock_baud)
    levels = transmit(data, clock_baud)
    assert decode(levels, period)[0] == data
    # the start bit begins the cycle after the handshake, frames follow with no idle time and
    # bit k of the stream starts at floor(k * period) (exactly k * period for whole periods)
    want = waveform([frame_bits(b) for b in data], period)
    assert levels == want[:len(levels)] and len(levels) > 10 * len(data) * period


@pytest.mark.parametrize("clock_baud", [ULX3S, ODD], ids=["div25_3", "div625_48"])
def test_transmitter_bit_edges_stay_within_a_cycle_of_ideal(clock_baud):
    """Over a long stream of back-to-back bytes at a fractional period every level change
    falls within one cycle of its ideal time (bit k at k * period): no drift."""
    data = random.Random(6).randbytes(250)
    period = bit_period(*clock_baud)
    levels = transmit(data, clock_baud)
    edges = [t for t in range(1, len(levels)) if levels[t] != levels[t - 1]]
    for t in edges:
        k = math.ceil(t / period)                  # the first ideal bit boundary at or after t
        assert k * period - t < 1, f"an edge at cycle {t}, {float(k * period - t):.2f} early"
    got, starts = decode(levels, period)
    assert got == data
    # frame j starts within a cycle of 10 * j bit periods, the last one too
    assert starts == [math.floor(10 * j * period) for j in range(len(data))]


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, ULX3S], ids=["div4", "div25_3"])
def test_transmitter_with_pauses_between_bytes(clock_baud):
    data = random.Random(4).randbytes(12)
    period = bit_period(*clock_baud)
    levels = transmit(data, clock_baud, offered=lambda c: (c // 37) % 3 != 0)
    got, starts = decode(levels, period)
    assert got == data
    # each frame, sent from idle, has its own phase: bit k at floor(k * period) after its start
    for i in starts:
        frame = levels[i:i + math.floor(10 * period)]
        assert frame == waveform([frame_bits(data[starts.index(i)])], period)[:len(frame)]


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER, ULX3S, ODD],
                         ids=["div4", "div13", "div25_3", "div625_48"])
def test_transmitter_into_receiver(clock_baud):
    """Both directions at once through the real components, back to back."""
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(*clock_baud)
    m.submodules.rx = rx = UARTReceiver(*clock_baud)
    m.d.comb += rx.rx.eq(tx.tx)
    data = random.Random(5).randbytes(50)
    got = []

    async def bench(ctx):
        pending = list(data)
        ctx.set(rx.data.ready, 1)
        for _ in range(math.ceil((len(data) + 2) * 10 * tx.period)):
            ctx.set(tx.data.valid, bool(pending))
            ctx.set(tx.data.payload, pending[0] if pending else 0)
            _, _, ready, valid, payload = await ctx.tick().sample(
                tx.data.ready, rx.data.valid, rx.data.payload)
            if pending and ready:
                pending.pop(0)
            if valid:
                got.append(payload)
        assert ctx.get(rx.framing_errors) == 0 and ctx.get(rx.overruns) == 0

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert bytes(got) == data


# (the components refused in their constructor are never elaborated: no warning wanted)
@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_bit_period_is_exact_and_checked():
    assert bit_period(12_000_000, 3_000_000) == 4
    assert bit_period(30_000_000, 3_000_000) == 10
    assert bit_period(25_000_000, 3_000_000) == Fraction(25, 3)
    assert bit_period(12_000_000, 921_600) == Fraction(625, 48)
    assert bit_period(12_000_000, 2_500_000) == Fraction(24, 5)   # 4.8: no rounding to 5
    assert bit_period(8_000_000, 2_000_000) == 4                  # the limit itself
    with pytest.raises(ValueError, match=r"^a 12000000 Hz clock gives 3\.00 cycles per bit at "
                       r"4000000 baud, fewer than the 4 the UART needs \(the baud rate is 33\.3% "
                       r"too high\): lower it to at most 3000000 baud or raise the clock to at "
                       r"least 16000000 Hz$"):
        UARTReceiver(12_000_000, 4_000_000)
    with pytest.raises(ValueError, match=r"25000000 Hz clock gives 3\.57 cycles.*7000000 baud.*"
                       r"the 4 the UART needs \(the baud rate is 12% too high\).*at most "
                       r"6250000 baud.*at least 28000000 Hz"):
        UARTTransmitter(25_000_000, 7_000_000)
    with pytest.raises(ValueError, match=r"gives 12000000/3000001 cycles per bit.*3\.33e-05% too"):
        bit_period(12_000_000, 3_000_001)                         # just below 4: exactly
    with pytest.raises(ValueError, match="must be positive"):
        bit_period(12_000_000, 0)
    gc.collect()      # the refused components go now, under this test's warning filter


def receive_taken(levels, clock_baud, ready):
    """Run the receiver on `levels` with `ready(cycle)`; return ([(cycle, byte) taken],
    framing errors, overruns)."""
    dut = UARTReceiver(*clock_baud)
    got, counts = [], {}

    async def bench(ctx):
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            taking = ready(cycle)
            ctx.set(dut.data.ready, taking)
            _, _, valid, payload = await ctx.tick().sample(dut.data.valid, dut.data.payload)
            if valid and taking:
                got.append((cycle, payload))
        counts["framing"] = ctx.get(dut.framing_errors)
        counts["overruns"] = ctx.get(dut.overruns)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, counts["framing"], counts["overruns"]


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, ULX3S], ids=["div4", "div25_3"])
def test_receiver_byte_taken_at_every_cycle_up_to_the_next_ones_completion(clock_baud):
    """Three bytes back to back; the first is taken (`ready` rising and staying high) at every
    cycle from the one it is offered in to two after the second byte completes (at 25/3
    cycles a bit: from 3 before). Taken up to
    and including the very cycle the second completes, no byte is lost, doubled or changed;
    taken later, the second is dropped and counted as an overrun, and the third still
    arrives."""
    data = bytes([0x5A, 0xC3, 0x81])
    levels = waveform([frame_bits(b) for b in data], bit_period(*clock_baud), idle=5)
    reference, framing, overruns = receive_taken(levels, clock_baud, lambda cycle: True)
    assert ([b for _, b in reference], framing, overruns) == (list(data), 0, 0)
    (first, _), (second, _), _ = reference
    completes = second - 1          # the cycle the second byte completes (offered the next)
    # every cycle at the smallest period; around the completion at the fractional one
    takes = range(first if clock_baud == ICEBREAKER else completes - 3, completes + 3)
    for take in takes:
        got, framing, overruns = receive_taken(levels, clock_baud, lambda cycle: cycle >= take)
        kept = data if take <= completes else data[:1] + data[2:]
        assert ([b for _, b in got], framing, overruns) == (list(kept), 0, int(take > completes)), \
            f"first byte taken {take - completes} cycles after the second completes"
        assert got[0][0] == take
