"""A transport to a protocol engine in Amaranth's simulator: no compiler needed, tiny configs.

The simulation advances only while the driver waits for bytes: `read(timeout)` runs up to
timeout * `cycles_per_second` cycles and returns as soon as a burst of reply bytes has ended.
`tx_every` > 1 takes a reply byte only one cycle in that many, as a slow link (a UART) does.
"""

from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

from .driver import Transport

__all__ = ["AmaranthLink"]


class AmaranthLink(Transport):
    """`component` has byte streams `rx` (to it) and `tx` (from it), like `ProtocolEngine`."""

    def __init__(self, component, cycles_per_second: float = 50_000, chunk: int = 64,
                 tx_every: int = 1):
        self.dut = component
        self.tx_every = tx_every
        self.cycles_per_second = cycles_per_second
        self.chunk = chunk
        self.period = 1e-8
        self.incoming: deque[int] = deque()
        self.outgoing = bytearray()
        self.cycles = 0
        self.sim = Simulator(component)
        self.sim.add_clock(self.period)
        self.sim.add_testbench(self._bench)

    async def _bench(self, ctx):
        dut = self.dut
        tx_ready = True
        ctx.set(dut.tx.ready, tx_ready)
        cycle = 0
        while True:
            if self.tx_every > 1:
                tx_ready = cycle % self.tx_every == 0
                ctx.set(dut.tx.ready, tx_ready)
                cycle += 1
            offered = bool(self.incoming)       # (bytes written while paused wait a cycle)
            ctx.set(dut.rx.valid, offered)
            if offered:
                ctx.set(dut.rx.payload, self.incoming[0])
            _, _, rx_ready, tx_valid, tx_byte = await ctx.tick().sample(
                dut.rx.ready, dut.tx.valid, dut.tx.payload)
            if offered and rx_ready:
                self.incoming.popleft()
            if tx_valid and tx_ready:
                self.outgoing.append(int(tx_byte))

    def _run(self, cycles: int) -> None:
        self.cycles += cycles
        self.sim.run_until(self.cycles * self.period)

    def clock(self) -> float:
        """Simulated seconds: the cycles run so far at `cycles_per_second` (a driver's clock
        that does not depend on how fast the simulator runs)."""
        return self.cycles / self.cycles_per_second

    def write(self, data: bytes) -> None:
        self.incoming.extend(data)

    def read(self, timeout: float) -> bytes:
        budget = max(self.chunk, int(timeout * self.cycles_per_second))
        spent = 0
        while spent < budget:
            before = len(self.outgoing)
            self._run(self.chunk)
            spent += self.chunk
            if self.outgoing and len(self.outgoing) == before and not self.incoming:
                break
        data = bytes(self.outgoing)
        self.outgoing.clear()
        return data
