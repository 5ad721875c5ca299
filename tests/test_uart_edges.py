"""The UART receiver at the edge of its hand-over: a byte taken in the very cycle the next one
completes is not an overrun (both arrive); taken a cycle later, the next one is lost and
counted."""

from amaranth.sim import Simulator

from cellsp.hdl.uart import UARTReceiver, bit_period
from .test_uart import ICEBREAKER, ULX3S, frame_bits, waveform


def handshakes(levels, clock_baud, ready):
    """Run the receiver on `levels` with `ready(cycle)`; return ([(cycle, byte) taken],
    overruns)."""
    dut = UARTReceiver(*clock_baud)
    taken, counts = [], {}

    async def bench(ctx):
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            ctx.set(dut.data.ready, ready(cycle))
            _, _, valid, payload = await ctx.tick().sample(dut.data.valid, dut.data.payload)
            if valid and ready(cycle):
                taken.append((cycle, payload))
        counts["overruns"] = ctx.get(dut.overruns)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return taken, counts["overruns"]


def test_a_byte_taken_the_cycle_the_next_completes_is_no_overrun():
    for clock_baud in (ICEBREAKER, ULX3S):
        levels = waveform([frame_bits(b) for b in b"\xa5\x3c"], bit_period(*clock_baud))
        end = len(levels) - 2
        # always taken: the first cycle each byte can be taken
        (first, _), (second, _) = handshakes(levels, clock_baud, lambda c: True)[0]
        # the first byte taken in the last cycle before the second is offered (the cycle the
        # second completes), or one cycle later; the second taken at the end
        for at, want in ((second - 1, ([0xa5, 0x3c], 0)), (second, ([0xa5], 1))):
            taken, overruns = handshakes(levels, clock_baud, lambda c: c in (at, end))
            assert ([b for _, b in taken], overruns) == want, (clock_baud, at)
