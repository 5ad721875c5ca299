"""The compiled Verilator byte link (cellsp.host.verilator_link) on a small Amaranth design.

The design XORs each byte with 0x5A and passes it through a 16-deep FIFO (so there is latency
and back-pressure). The link binary is built once (cached under $CELLSP_CACHE; 10-20 s cold on
2 cores) and shared by the tests.
"""

import random
import resource
import time

import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cellsp.hdl.verilog import convert
from cellsp.host.verilator_build import LINK_HARNESS
from cellsp.host.verilator_link import LinkError, VerilatorLink, bench_link


class XorFifo(wiring.Component):
    """Each input byte XOR 0x5A, through a FIFO of `depth` bytes."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def __init__(self, depth: int = 16):
        self.depth = depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.rx.payload ^ 0x5A),
            fifo.w_en.eq(self.rx.valid),
            self.rx.ready.eq(fifo.w_rdy),
            self.tx.payload.eq(fifo.r_data),
            self.tx.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.tx.ready),
        ]
        return m


@pytest.fixture(scope="module")
def xor_link():
    link = VerilatorLink(convert(XorFifo(), "xor_fifo"), top="xor_fifo", name="xor_fifo_link")
    link.build()
    return link


def test_echo_100k_random_bytes(xor_link):
    data = random.Random(1).randbytes(100_000)
    expected = bytes(b ^ 0x5A for b in data)
    received = bytearray()
    with xor_link as link:
        for i in range(0, len(data), 4096):
            link.write(data[i:i + 4096])
            received += link.read(len(data), timeout=0.001)
        deadline = time.monotonic() + 10
        while len(received) < len(data) and time.monotonic() < deadline:
            received += link.read(len(data) - len(received), timeout=1.0)
        assert link.read(1, timeout=0.05) == b""   # nothing extra
        assert link.cycles() >= len(data)          # one byte per cycle at most
    assert len(received) == len(data)
    first_bad = next((i for i, (a, b) in enumerate(zip(received, expected)) if a != b), None)
    assert first_bad is None, f"byte {first_bad}: got {received[first_bad]:#04x}, " \
                              f"expected {expected[first_bad]:#04x}"


def test_the_binary_is_built_from_the_package_harness(xor_link):
    """The model folder keeps the design and the harness files it was compiled from."""
    folder = xor_link.model.folder
    assert (folder / xor_link.name).is_file() and (folder / "design.v").is_file()
    for name, text in LINK_HARNESS.files.items():
        assert (folder / name).read_text() == text, name


def test_read_with_nothing_sent_times_out(xor_link):
    with xor_link as link:
        start = time.monotonic()
        assert link.read(10, timeout=0.2) == b""
        assert time.monotonic() - start < 1.0
        link.write(b"\x00\xff")
        assert link.read(2, timeout=5.0) == b"\x5a\xa5"
    assert xor_link.close() == 0   # closing twice is harmless


def test_idle_link_does_not_spin(xor_link):
    with xor_link as link:
        link.write(b"x")
        assert link.read(1, timeout=5.0) == bytes([ord("x") ^ 0x5A])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cycles0 = link.cycles()
        time.sleep(0.5)
        idle_cycles = link.cycles() - cycles0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)   # the child has been reaped now
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert idle_cycles < 200_000, idle_cycles   # about 1000 cycles per 10 ms poll
    assert cpu < 0.25, cpu


def test_dead_process_raises_with_exit_code(xor_link):
    link = xor_link.open()
    try:
        link._proc.kill()
        link._proc.wait()
        with pytest.raises(LinkError, match="exited with code -9"):
            link.write(b"abc")
        with pytest.raises(LinkError, match="exited with code -9"):
            link.read(1, timeout=5.0)
    finally:
        link.close()


class Stuck(wiring.Component):
    """Never takes a byte, never sends one: a design that has stopped answering."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        counter = Signal(8)        # some state, so the design is not empty
        m.d.sync += counter.eq(counter + 1)
        return m


def test_stuck_design_exits_after_stdin_eof():
    """The host goes (stdin EOF) while the design holds back input: the binary gives up on its
    own and says why, instead of ticking for ever (such orphans once ran for an hour)."""
    link = VerilatorLink(convert(Stuck(), "stuck"), top="stuck", name="stuck_link").open()
    link.write(b"never taken")        # (the link wrapper may hold one byte in its register)
    with pytest.raises(LinkError, match=r"took no byte .* \d+ input bytes left unread"):
        link.close(timeout=60.0)      # a kill after the timeout would return -9 instead


def test_bench_link(xor_link):
    result = bench_link(xor_link, 1 << 20)
    print(f"\nxor_fifo link: {result['bytes_per_s'] / 1e6:.1f} MB/s, "
          f"{result['cycles_per_s'] / 1e6:.1f} M cycles/s")
    assert result["bytes_per_s"] > 1e5
    assert result["cycles"] >= 1 << 20
