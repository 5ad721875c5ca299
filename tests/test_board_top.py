"""The board top's sizes, as its docstring states them: the receive FIFO holds a full window
of STEP requests and the longest request (the smallest power of two that does), and a frame
cut off is dropped after 10 ms or 64 byte times, whichever is longer."""

import gc
import math

import pytest

from cellsp.hdl.top import BoardTop, rx_fifo_depth
from cellsp.sim import SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import HEADER, TRAILER, ProtocolLayout
from .configs import SIXTEEN, TINY


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
