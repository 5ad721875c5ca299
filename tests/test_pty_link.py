"""The exact board gateware (cellsp.hdl.top.BoardTop: UART, receive FIFO, protocol engine,
cell array) compiled by Verilator behind a pseudo-terminal (cellsp.host.pty_link), driven the
way a board is: ``open_driver("serial:/dev/pts/N")``, pyserial, bit-serial UART frames at the
iCEBreaker's 4 cycles a bit. Every output bit and the final state are compared with the golden
model.

The harness is built once for this module (15-30 s cold on 2 cores, cached under
$CELLSP_CACHE); each test starts a fresh harness process, i.e. a freshly reset device.
"""

import os
import random
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import MARKER, Type, encode, pack_bits
from cellsp.host.driver import DeviceTimeout
from cellsp.host.pty_link import board_pty_link
from cellsp.host.serial_link import SerialPortError, SerialTransport, parse_serial_target
from cellsp.host.targets import open_driver
from cellsp.sim import GoldenModel
from .configs import TINY_BOOSTED as CFG

# 3 processing elements of 3 cells: a short Verilator build
GEOMETRY = ArrayGeometry.for_config(CFG, input_width=6, cells_per_pe=3)


@pytest.fixture(scope="module")
def board():
    link = board_pty_link(GEOMETRY)
    link.build()
    return link


@pytest.fixture
def port(board):
    with board as path:
        yield path


def first_difference(got, want):
    """'step t, cell (r, c): got x, golden y' for the first differing bit, or None."""
    bad = np.argwhere(got != want)
    if not len(bad):
        return None
    t, r, c = bad[0]
    return f"step {t}, cell ({r}, {c}): got {got[t, r, c]}, golden {want[t, r, c]}"


def check_run(driver, golden, X, learn=True):
    """Step `X` through the device (one at a time, then pipelined) and the golden model; the
    outputs must agree bit for bit."""
    split = len(X) // 4
    single = np.array([driver.step(x, learn=learn)[0] for x in X[:split]])
    piped, cycles = driver.run(X[split:], learn=learn, window=4)
    got = np.concatenate([single, piped])
    want = golden.run(X, learn=learn)
    assert got.shape == want.shape
    difference = first_difference(got, want)
    assert difference is None, difference
    assert (cycles > 0).all()
    return got


def test_learning_run_bit_exact_through_the_serial_port(board, port):
    driver = open_driver(f"serial:{port}", GEOMETRY, timeout=2.0)
    try:
        info = driver.identify()
        assert info["cell_shape"] == CFG.cell_shape and info["input_shape"] == CFG.input_shape
        assert info["config_hash"] == CFG.hash[:16] and info["cells_per_pe"] == 3
        golden = GoldenModel(CFG)
        driver.load_state(golden.state())
        assert driver.read_state().differences(golden.state()) == []
        X = np.random.default_rng(7).random((64,) + CFG.input_shape) < 0.35
        active = check_run(driver, golden, X, learn=True)
        assert active.any() and not active.all()          # a run that says something
        final = driver.read_state()
        assert final.differences(golden.state()) == []
        assert final.differences(GoldenModel(CFG).state()) != []   # it did learn
        assert driver.retried == 0          # no byte lost on the line or in the FIFO
    finally:
        driver.close()
    stats = board.stats()
    assert stats["tx_framing_errors"] == 0 and stats["tx_bytes"] > 0


def test_garbage_on_the_line_then_normal_operation(board, port):
    driver = open_driver(f"serial:{port}", GEOMETRY, timeout=1.0)
    try:
        golden = GoldenModel(CFG)                           # a state with some learning
        golden.run(np.random.default_rng(1).random((20,) + CFG.input_shape) < 0.4, learn=True)
        driver.load_state(golden.state())
        X = np.random.default_rng(2).random((24,) + CFG.input_shape) < 0.4
        rng = random.Random(3)
        for round_ in range(4):
            # aimed at the sequence number the engine expects: executed, it would learn
            step = encode(Type.STEP, driver.seq, bytes([1]) + pack_bits(X[-1]))
            flipped = bytearray(step)
            flipped[rng.randrange(5, len(flipped))] ^= 1 << rng.randrange(8)
            junk = bytes(rng.choice([MARKER, rng.randrange(256)]) for _ in range(40))
            driver.transport.write(junk + bytes(flipped) + step[:7])   # ends cut off
            # whatever the engine answers (errors), until it has dropped the cut-off frame
            for _ in range(100):
                if not driver.transport.read(0.3):
                    break
            check_run(driver, golden, X[round_ * 6:(round_ + 1) * 6], learn=True)
        assert driver.read_state().differences(golden.state()) == []
    finally:
        driver.close()


def test_port_can_be_reopened_and_the_device_keeps_its_state(board, port):
    golden = GoldenModel(CFG)
    X = np.random.default_rng(4).random((8,) + CFG.input_shape) < 0.4
    with open_driver(f"serial:{port}", GEOMETRY, timeout=2.0) as driver:
        driver.load_state(golden.state())
        check_run(driver, golden, X[:4])
    with open_driver(f"serial:{port}", GEOMETRY, timeout=2.0) as driver:   # connect: IDENTIFY
        check_run(driver, golden, X[4:])
        assert driver.read_state().differences(golden.state()) == []


def test_idle_harness_does_not_spin_and_exits_when_closed(board):
    port = board.open()
    try:
        with open_driver(f"serial:{port}", GEOMETRY, timeout=2.0):
            pass
        # past the harness's free-running stretch after the last bit (200,000 cycles)
        deadline = time.monotonic() + 20
        while True:
            before = board.stats()["cycles"]
            time.sleep(0.2)
            idle_cycles = board.stats()["cycles"] - before
            if idle_cycles < 100_000 or time.monotonic() > deadline:
                break
        pid = board._proc.pid
        cpu0, cycles0 = cpu_seconds(pid), board.stats()["cycles"]
        time.sleep(0.5)
        idle_cycles = board.stats()["cycles"] - cycles0
        cpu = cpu_seconds(pid) - cpu0
    finally:
        assert board.close() == 0
    assert idle_cycles < 200_000, idle_cycles                   # about 1000 per 10 ms poll
    assert cpu < 0.1, cpu                                        # a spinning loop takes ~0.5
    assert not os.path.exists(port)         # the pty went with the harness


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_harness_exits_when_its_parent_dies(board):
    binary = board.build()
    # an intermediate parent that starts the harness and is then killed without cleaning up
    script = ("import os, subprocess, sys, time\n"
              f"p = subprocess.Popen([{str(binary)!r}, '--bit-cycles', '4', '--parent-pid', "
              "str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)\n"
              "print(p.pid, flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the harness outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_host_at_the_wrong_baud_rate_gets_a_timeout_not_a_hang(board):
    # the same gateware, its pins driven at 6 cycles a bit instead of 4 (1/3 too slow)
    wrong = board.at_bit_cycles(6)
    with wrong as port:
        with pytest.raises(DeviceTimeout, match="no reply to IDENTIFY"):
            open_driver(f"serial:{port}", GEOMETRY, timeout=0.3)


def test_the_ulx3s_rate_25_mhz_at_3_mbaud_through_the_serial_port():
    """The same gateware at a fractional bit period (25/3 cycles), both in the UART and in the
    harness driving its pins: learning steps bit-exact, no byte lost either way."""
    link = board_pty_link(GEOMETRY, clock_hz=25_000_000, baud=3_000_000)
    assert link.bit_cycles == Fraction(25, 3)
    with link as port:
        with open_driver(f"serial:{port}", GEOMETRY, timeout=2.0) as driver:
            golden = GoldenModel(CFG)
            driver.load_state(golden.state())
            X = np.random.default_rng(9).random((16,) + CFG.input_shape) < 0.35
            check_run(driver, golden, X, learn=True)
            assert driver.read_state().differences(golden.state()) == []
            assert driver.retried == 0
        stats = link.stats()
    assert stats["tx_framing_errors"] == 0 and stats["rx_bytes"] > 0 and stats["tx_bytes"] > 0
    # the harness sent at exactly 25/3 cycles a bit: each run of back-to-back bytes lasts
    # 10 * 25/3 cycles a byte, rounded down (less than a cycle short per run, so per byte)
    ideal = stats["rx_bytes"] * 10 * Fraction(25, 3)
    assert ideal - stats["rx_bytes"] < stats["rx_line_cycles"] <= ideal, stats


def test_a_port_that_cannot_be_opened_says_which_and_what_to_try():
    with pytest.raises(SerialPortError, match=r"cannot open serial port '/dev/cellsp-no-such-"
                                              r"port' at 3000000 baud.*list_ports.*dialout"):
        open_driver("serial:/dev/cellsp-no-such-port", GEOMETRY)
    with pytest.raises(SerialPortError, match="cannot open serial port '/dev/null' at 115200"):
        SerialTransport("/dev/null", 115200)


def test_serial_targets_are_parsed():
    assert parse_serial_target("serial:/dev/ttyUSB1", 3_000_000) == ("/dev/ttyUSB1", 3_000_000)
    assert parse_serial_target("serial:COM3@115200", 3_000_000) == ("COM3", 115200)
    with pytest.raises(ValueError, match="must be an integer from 1"):
        parse_serial_target("serial:/dev/ttyUSB1@fast", 3_000_000)
    with pytest.raises(ValueError, match="name the port"):
        parse_serial_target("serial:", 3_000_000)


def test_a_slow_models_reply_timeout_covers_its_longest_exchange():
    """`cellsp verify --netlist` waits for a gate-level model as long as four of its longest
    exchanges take at the speed measured (a board's 5 s expired before a ULX3S netlist had
    taken a LOAD_CHUNK's bytes), and 5 s for a model as fast as a board."""
    from fractions import Fraction

    from cellsp.boards.boards import get_board
    from cellsp.boards.fit import cycles_per_input
    from cellsp.host.verify import reply_timeout
    from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout

    board = get_board("ulx3s-85f")
    geometry = board.geometry(board.default_config, board.default_cells_per_pe)
    bit = Fraction(board.clock_hz, board.baud)
    lay = ProtocolLayout.for_geometry(geometry)
    chunk_cycles = 10 * bit * (HEADER + TRAILER + lay.max_payload)
    assert reply_timeout(geometry, bit, board.clock_hz) == 5.0
    slow = reply_timeout(geometry, bit, 2_400)
    assert slow > 4 * float(chunk_cycles + 8 * cycles_per_input(geometry)) / 2_400
    assert reply_timeout(geometry, bit, 1_200) == 2 * slow
