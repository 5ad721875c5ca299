"""The board top's sizes, as its docstring states them: the receive FIFO holds a full window
of STEP requests and the longest request (the smallest power of two that does), and a frame
cut off is dropped after 10 ms or 64 byte times, whichever is longer; and the board top at
each board's clock and baud rate in the pty harness."""

import gc
import math
from fractions import Fraction

import numpy as np
import pytest

from cellsp.boards.boards import BOARDS
from cellsp.hdl.top import BoardTop, rx_fifo_depth
from cellsp.host.bench_boards import batch_step_bytes, protocol2_step_bytes
from cellsp.host.link_timing import time_link
from cellsp.host.pty_link import board_pty_link
from cellsp.host.targets import open_driver
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout
from .configs import SIXTEEN, TINY, TINY_BOOSTED


#: a 31x32 input: 124 input bytes, 8 STEP frames of 132 bytes just over 1,024 (their payloads
#: alone just under)
@pytest.mark.parametrize("config", [TINY, SIXTEEN, SPConfig(), SPConfig(input_shape=(31, 32))],
                         ids=["tiny", "16x16", "32x32", "31x32-input"])
def test_the_receive_fifo_holds_a_window_of_steps_and_the_longest_request(config):
    geometry = ArrayGeometry.for_config(config)
    lay = ProtocolLayout.for_geometry(geometry)
    frame = HEADER + TRAILER
    need = max(lay.reply_window * (frame + lay.step_request), frame + lay.max_payload)
    depth = rx_fifo_depth(geometry)
    assert depth >= need and depth & (depth - 1) == 0 and depth // 2 < need


@pytest.mark.parametrize("clock_hz, baud, timeout", [
    (12_000_000, 3_000_000, 120_000),          # 10 ms is longer
    (12_000_000, 9_600, 800_000),              # 64 bytes of 10 bits at 1,250 cycles a bit
    (25_000_000, 115_200, 250_000),            # 10 ms
    (25_000_000, 19_200, math.ceil(640 * 25_000_000 / 19_200)),
])
@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_a_cut_off_frame_is_dropped_after_10_ms_or_64_byte_times(clock_hz, baud, timeout):
    top = BoardTop(ArrayGeometry.for_config(TINY), clock_hz=clock_hz, baud=baud)
    assert top.frame_timeout_cycles == timeout
    del top                     # never elaborated: Amaranth's warning comes here, filtered
    gc.collect()


def _board_rates() -> list[tuple[int, int]]:
    """Each board's (clock, baud), and each offered array's where it has its own, once per
    distinct pair. The UART's floor, 4 cycles a bit (12 MHz / 3 Mbaud, the pair of no board:
    the iCEBreaker runs at 18 MHz), is tested in the pty harness by tests/test_pty_link.py
    (`board_pty_link`'s default) and in tests/test_uart.py."""
    built = [b.for_array(a.name) for b in BOARDS.values() for a in b.arrays]
    return sorted({(b.clock_hz, b.baud) for b in [*BOARDS.values(), *built]})


@pytest.mark.parametrize("clock_hz, baud", _board_rates(),
                         ids=[f"{c / 1e6:g}MHz-{b / 1e6:g}Mbaud" for c, b in _board_rates()])
def test_each_boards_uart_rate_through_the_pty_harness(clock_hz, baud):
    """The board gateware at each board's clock and baud rate, both in its UART and in the
    pty harness driving its pins: learning steps bit-exact with the golden model, no byte
    lost either way. The same small geometry as tests/test_pty_link.py, so that the rates
    tested there reuse its harness builds."""
    geometry = ArrayGeometry.for_config(TINY_BOOSTED, input_width=6, cells_per_pe=3)
    link = board_pty_link(geometry, clock_hz=clock_hz, baud=baud)
    assert link.bit_cycles == Fraction(clock_hz, baud)
    with link as port:
        with open_driver(f"serial:{port}@{baud}", geometry, timeout=2.0) as driver:
            golden = GoldenModel(TINY_BOOSTED)
            driver.load_state(golden.state())
            X = np.random.default_rng(11).random((12,) + TINY_BOOSTED.input_shape) < 0.35
            got = np.array([driver.step(x, learn=True)[0] for x in X[:4]])
            piped, _ = driver.run(X[4:], learn=True, window=4)
            want = golden.run(X, learn=True)
            assert (np.concatenate([got, piped]) == want).all()
            assert driver.read_state().differences(golden.state()) == []
            assert driver.retried == 0
        stats = link.stats()
    assert stats["tx_framing_errors"] == 0 and stats["rx_bytes"] > 0 and stats["tx_bytes"] > 0


def test_link_timing_in_the_pty_harness_counts_the_bytes_the_arithmetic_uses():
    """`cellsp bench links --simulate` (`time_link`): through the board gateware at the
    ECPIX-5's 48 MHz / 12 Mbaud (the harness of the test above), STEPs and BATCH learning are
    bit-exact, each format's bytes a step on the two pins are exactly those of the link
    arithmetic (`cellsp.host.bench_boards`), and the line to the board is never busier than
    the cycles that passed (the timed rate itself depends on the host's speed: a benchmark,
    not checked here)."""
    board = BOARDS["ecpix5-85f"]
    geometry = board.geometry(TINY_BOOSTED, 3)
    steps = 3 * ProtocolLayout.for_geometry(geometry).batch_steps
    timed = time_link(board, TINY_BOOSTED, 3, steps=steps)
    assert timed["bit_exact"] and timed["formats_not_offered"] == []
    for name, step_bytes in (("STEP", protocol2_step_bytes), ("BATCH learning",
                                                             batch_step_bytes)):
        want = step_bytes(geometry, board)["learning"]
        got = timed["formats"][name]
        assert (got["rx_bytes_per_step"], got["tx_bytes_per_step"]) == (want.request,
                                                                         want.reply), name
        assert got["steps"] == steps and 0 < got["line_busy"] <= 1, name
