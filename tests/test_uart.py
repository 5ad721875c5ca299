"""The UART (cellsp.hdl.uart) in Amaranth's simulator: the receiver fed line waveforms made in
Python (at the nominal rate, 2% fast or slow, with framing errors and a stuck-low line), the
transmitter's pin decoded and its timing checked, and the two back to back in a loop."""

import gc
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from cellsp.hdl.uart import UARTReceiver, UARTTransmitter, bit_cycles

ICEBREAKER = (12_000_000, 3_000_000)      # 4 cycles a bit
SLOWER = (12_000_000, 921_600)           # 13 cycles a bit (0.2% off)


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """The 10 line levels of one 8N1 frame."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def waveform(frames, divisor: int, rate: float = 1.0, idle: int = 0, gap_bits: float = 0.0):
    """Line level per clock cycle for `frames` (lists of bit levels) sent back to back (plus
    `gap_bits` of idle between frames), at `rate` times the nominal baud rate: bit k of the
    stream starts at cycle idle + k * divisor / rate, rounded down, as a far end with its own
    clock would send it."""
    levels = [1] * idle
    t = float(idle)
    period = divisor / rate
    for bits in frames:
        for level in bits:
            t += period
            levels += [level] * (int(t) - len(levels))
        t += gap_bits * period
        levels += [1] * (int(t) - len(levels))
    return levels + [1] * (12 * divisor)      # time for the last byte to come out


def receive(levels, clock_baud, ready=None):
    """Run the receiver on `levels`; return (bytes received, framing errors, overruns).
    `ready(cycle)` says whether the byte stream is taken that cycle (always by default)."""
    dut = UARTReceiver(*clock_baud)
    got = []
    counts = {}

    async def bench(ctx):
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            taking = True if ready is None else ready(cycle)
            ctx.set(dut.data.ready, taking)
            _, _, valid, payload = await ctx.tick().sample(dut.data.valid, dut.data.payload)
            if valid and taking:
                got.append(payload)
        counts["framing"] = ctx.get(dut.framing_errors)
        counts["overruns"] = ctx.get(dut.overruns)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(got), counts["framing"], counts["overruns"]


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER], ids=["div4", "div13"])
def test_receiver_takes_random_bytes_back_to_back(clock_baud):
    data = random.Random(1).randbytes(40)
    divisor = bit_cycles(*clock_baud)
    got, framing, overruns = receive(waveform([frame_bits(b) for b in data], divisor, idle=7),
                                     clock_baud)
    assert (got, framing, overruns) == (data, 0, 0)


@pytest.mark.parametrize("rate", [0.98, 1.02], ids=["2pc_slow", "2pc_fast"])
@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER], ids=["div4", "div13"])
def test_receiver_tolerates_a_far_end_2_percent_off(clock_baud, rate):
    data = random.Random(2).randbytes(30) + b"\x00\xff\x55\xaa"
    divisor = bit_cycles(*clock_baud)
    # back to back: the receiver must resynchronise on every start bit
    got, framing, _ = receive(waveform([frame_bits(b) for b in data], divisor, rate, idle=3),
                              clock_baud)
    assert (got, framing) == (data, 0)


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER], ids=["div4", "div13"])
def test_framing_error_drops_the_byte_and_is_counted(clock_baud):
    divisor = bit_cycles(*clock_baud)
    good = b"\x12\x34\xfe"
    frames = [frame_bits(0x5A, stop=0), [1]] + [frame_bits(b) for b in good]
    got, framing, _ = receive(waveform(frames, divisor, idle=5), clock_baud)
    assert (got, framing) == (good, 1)


def test_a_stuck_low_line_counts_one_error_then_recovers():
    divisor = bit_cycles(*ICEBREAKER)
    good = b"\x00\x81\x7e"
    frames = [[0] * 200, [1] * 3] + [frame_bits(b) for b in good]    # 20 frames' time low
    got, framing, _ = receive(waveform(frames, divisor, idle=2), ICEBREAKER)
    assert (got, framing) == (good, 1)


def test_a_short_glitch_is_not_a_start_bit():
    divisor = bit_cycles(*SLOWER)
    levels = [1] * 20 + [0] * 3 + [1] * 40      # low for less than half a bit
    levels += waveform([frame_bits(0xC3)], divisor)
    assert receive(levels, SLOWER)[:2] == (b"\xc3", 0)


def test_a_byte_not_taken_in_time_is_counted_as_overrun():
    divisor = bit_cycles(*ICEBREAKER)
    levels = waveform([frame_bits(b) for b in b"\x01\x02\x03"], divisor)
    # nobody takes a byte until the third one is in: the first is kept, the others dropped
    got, _, overruns = receive(levels, ICEBREAKER, ready=lambda c: c > 35 * divisor)
    assert (got, overruns) == (b"\x01", 2)


def transmit(data: bytes, clock_baud, offered=None):
    """Run the transmitter with `data` offered on its stream (when `offered(cycle)` says so,
    always by default); return the pin level per cycle, the first cycle being the cycle after
    the first byte was taken."""
    dut = UARTTransmitter(*clock_baud)
    divisor = dut.divisor
    levels = []

    async def bench(ctx):
        pending = list(data)
        cycle = 0
        started = False
        quiet = 0
        while pending or quiet < 12 * divisor:
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


def decode(levels, divisor: int):
    """Bytes from a pin waveform, with the cycle each frame starts; asserts 8N1 framing."""
    out, starts = [], []
    i = 0
    while i < len(levels):
        if levels[i]:
            i += 1
            continue
        bits = [levels[i + divisor // 2 + k * divisor] for k in range(10)]
        assert bits[0] == 0 and bits[9] == 1, f"bad frame at cycle {i}: {bits}"
        # each bit holds for exactly `divisor` cycles
        for k in range(10):
            span = levels[i + k * divisor:i + (k + 1) * divisor]
            assert span == [bits[k]] * divisor, f"bit {k} of the frame at cycle {i}: {span}"
        out.append(sum(b << k for k, b in enumerate(bits[1:9])))
        starts.append(i)
        i += 10 * divisor
    return bytes(out), starts


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER], ids=["div4", "div13"])
def test_transmitter_sends_random_bytes_back_to_back(clock_baud):
    data = random.Random(3).randbytes(40)
    divisor = bit_cycles(*clock_baud)
    levels = transmit(data, clock_baud)
    got, starts = decode(levels, divisor)
    assert got == data
    # the start bit begins the cycle after the handshake, frames follow with no idle time
    assert starts == [k * 10 * divisor for k in range(len(data))]


def test_transmitter_with_pauses_between_bytes():
    data = random.Random(4).randbytes(12)
    divisor = bit_cycles(*ICEBREAKER)
    levels = transmit(data, ICEBREAKER, offered=lambda c: (c // 37) % 3 != 0)
    assert decode(levels, divisor)[0] == data


@pytest.mark.parametrize("clock_baud", [ICEBREAKER, SLOWER], ids=["div4", "div13"])
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
        for _ in range((len(data) + 2) * 10 * tx.divisor):
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
def test_bit_period_is_computed_and_checked():
    assert bit_cycles(12_000_000, 3_000_000) == 4
    assert bit_cycles(12_000_000, 115_200) == 104
    with pytest.raises(ValueError, match=r"12000000 Hz.*4000000 baud.*at least 4"):
        UARTReceiver(12_000_000, 4_000_000)              # 3 cycles a bit
    with pytest.raises(ValueError, match=r"12000000 Hz.*2500000 baud.*4.0% off"):
        UARTTransmitter(12_000_000, 2_500_000)            # 5 cycles: 2.4 Mbaud
    with pytest.raises(ValueError, match="must be positive"):
        bit_cycles(12_000_000, 0)
    gc.collect()      # the refused components go now, under this test's warning filter
