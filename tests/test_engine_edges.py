"""The protocol engine at the edges of its rules, in Amaranth's simulator behind the driver: a
STEP payload of odd length, a frame of exactly the longest payload, a retry exactly a reply
window behind (answered from the cache with the very reply sent first) and one further
(refused)."""

import numpy as np

from cellsp.hdl.protocol import ProtocolEngine
from cellsp.host.amaranth_link import AmaranthLink
from cellsp.host.driver import Driver, Transport
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import Decoder, Error, ProtocolLayout, Reply, Type, encode

#: a 4x4 input: 2 input bytes and the flags byte, a STEP payload of odd length (3)
ODD = SPConfig(input_shape=(4, 4), cell_shape=(3, 3), potential_radius=1, stimulus_threshold=1)


class Recorder(Transport):
    """Wraps a transport and keeps every frame written and every reply read, in order."""

    def __init__(self, inner):
        self.inner = inner
        self.frames, self.replies = [], []
        self.decoder = Decoder()

    def write(self, data):
        self.frames += Decoder().feed(data)
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        self.replies += self.decoder.feed(data)
        return data


def connect(config, **geometry):
    geometry = ArrayGeometry.for_config(config, **geometry)
    link = Recorder(AmaranthLink(ProtocolEngine(geometry, timeout=3000)))
    return link, Driver(link, geometry, timeout=0.2), geometry


def test_steps_with_an_odd_payload_length_are_bit_exact():
    link, driver, geometry = connect(ODD, input_width=4)
    assert ProtocolLayout.for_geometry(geometry).step_request % 2 == 1
    golden = GoldenModel(ODD)
    X = np.random.default_rng(0).random((6,) + ODD.input_shape) < 0.5
    for x in X:
        active, _ = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all()
    assert driver.read_state().differences(golden.state()) == []


def test_a_frame_of_exactly_the_longest_payload_is_received():
    """A LOAD_CHUNK of max_payload bytes with no load begun: refused for that (BAD_STATE),
    not as too long; one byte more is too long."""
    link, driver, geometry = connect(ODD, input_width=4)
    longest = ProtocolLayout.for_geometry(geometry).max_payload
    for length, code in ((longest, Error.BAD_STATE), (longest + 1, Error.TOO_LONG)):
        link.write(encode(Type.LOAD_CHUNK, driver.seq, bytes(length)))
        replies = [Reply.parse(f) for f in Decoder().feed(link.read(0.3))]
        assert [r.code for r in replies] == [code], length


def test_a_retry_exactly_a_window_behind_is_answered_from_the_cache():
    link, driver, geometry = connect(ODD, input_width=4)
    window = ProtocolLayout.for_geometry(geometry).reply_window
    golden = GoldenModel(ODD)
    X = np.random.default_rng(1).random((window + 1,) + ODD.input_shape) < 0.5
    out, _ = driver.run(X, learn=True, window=window)
    assert (out == golden.run(X, learn=True)).all()
    steps = [f for f in link.frames if f.type == Type.STEP]
    for behind, frame in ((window, steps[-window]), (window + 1, steps[-window - 1])):
        link.inner.write(encode(frame.type, frame.seq, frame.payload))
        replies = Decoder().feed(link.read(0.3))
        assert [f.seq for f in replies] == [frame.seq], behind
        if behind == window:       # the cached reply, byte for byte: the step is not run again
            first = [f for f in link.replies if f.seq == frame.seq and f.type == Type.STEP
                     | Type.REPLY]
            assert replies == first[:1]
        else:
            assert Reply.parse(replies[0]).code == Error.OUT_OF_ORDER
    assert driver.read_state().differences(golden.state()) == []
