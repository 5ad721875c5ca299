"""The host driver at the edges of its rules: a state's words in the wire's byte order both
ways, the step's cycle count read exactly, as many requests in flight as the window and no
more, as many tries as asked for, a refusal that names the request's own seq taken as a
refusal (not as a frame lost before it), sequence numbers wrapping from 255 to 0."""

import struct

import numpy as np
import pytest

from cellsp.host.driver import DeviceError, DeviceTimeout, Driver, Transport
from cellsp.sim import GoldenModel
from cellsp.sim.wire import Decoder, Error, Type, encode, frame_check
from .test_array_edges import first_step_cycles
from .test_engine_edges import ODD, Recorder, connect


class InFlight(Recorder):
    """Counts the requests written whose replies have not been read yet (the most at once)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.waiting, self.most = set(), 0

    def write(self, data):
        self.waiting |= {f.seq for f in Decoder().feed(data)}
        self.most = max(self.most, len(self.waiting))
        super().write(data)

    def read(self, timeout):
        data = super().read(timeout)
        self.waiting -= {f.seq for f in self.replies}
        return data


def test_a_loaded_state_steps_and_reads_back_bit_exact_with_its_cycles():
    """A trained state (two chunks of 2-byte words) loaded, one step (its cycle count: the
    array's first step after a load, exactly), the state read back."""
    link, driver, geometry = connect(ODD, input_width=4)
    golden = GoldenModel(ODD)
    rng = np.random.default_rng(1)
    golden.run(rng.random((20,) + ODD.input_shape) < 0.5, learn=True)
    driver.load_state(golden.state())
    x = rng.random(ODD.input_shape) < 0.5
    active, cycles = driver.step(x, learn=True)
    assert (active == golden.step(x, learn=True)).all()
    assert cycles == first_step_cycles(geometry)
    assert driver.read_state().differences(golden.state()) == []


def test_a_run_keeps_exactly_the_window_in_flight():
    link, driver, geometry = connect(ODD, input_width=4)
    flight = InFlight(link.inner)
    driver.transport = flight
    golden = GoldenModel(ODD)
    X = np.random.default_rng(2).random((10,) + ODD.input_shape) < 0.5
    out, _ = driver.run(X, learn=True, window=3)
    assert (out == golden.run(X, learn=True)).all()
    assert flight.most == 3


class Scripted(Transport):
    """A device that answers each request with `answer(frame)` (frames, maybe none) and
    counts the requests."""

    def __init__(self, answer):
        self.answer, self.out, self.requests = answer, b"", []

    def write(self, data):
        for frame in Decoder().feed(data):
            self.requests.append(frame)
            self.out += b"".join(f.encode() for f in self.answer(frame))

    def read(self, timeout):
        data, self.out = self.out, b""
        return data


def test_a_silent_device_gets_exactly_retries_plus_one_tries():
    device = Scripted(lambda frame: [])
    with pytest.raises(DeviceTimeout, match="after 3 tries"):
        Driver(device, connect(ODD, input_width=4)[2], timeout=0.01, retries=2)
    assert len(device.requests) == 3


class RefuseNextStep(Transport):
    """Wraps a transport: the next STEP never reaches the device, which seems to answer it
    OUT_OF_ORDER expecting that very seq (as a device that lost its place would)."""

    def __init__(self, inner, driver):
        self.inner, self.driver, self.armed, self.out = inner, driver, True, b""

    def write(self, data):
        steps = [f for f in Decoder().feed(data) if f.type == Type.STEP]
        if self.armed and steps:
            self.armed = False
            step = steps[0]
            prefix = struct.pack("<HI", frame_check(step.encode()), self.driver.changes)
            body = bytes([Error.OUT_OF_ORDER, step.seq, Type.STEP])
            self.out += encode(Type.ERROR, step.seq, prefix + body)
            return
        self.inner.write(data)

    def read(self, timeout):
        data, self.out = self.out + self.inner.read(timeout), b""
        return data


def test_out_of_order_naming_the_requests_own_seq_is_a_refusal():
    """Nothing was lost before the request: the driver reports the refusal (and resends
    nothing) rather than taking it for a lost earlier frame."""
    link, driver, geometry = connect(ODD, input_width=4)
    driver.transport = RefuseNextStep(link, driver)
    with pytest.raises(DeviceError, match="refused: .* expects seq"):
        driver.step(np.zeros(ODD.input_shape, bool), learn=False)


def test_sequence_numbers_wrap_from_255_to_0():
    link, driver, geometry = connect(ODD, input_width=4)
    driver.seq = 250
    driver.connect()                        # the engine now expects the driver's numbers
    golden = GoldenModel(ODD)
    X = np.random.default_rng(3).random((8,) + ODD.input_shape) < 0.5
    out, _ = driver.run(X, learn=True, window=2)
    assert (out == golden.run(X, learn=True)).all()
    assert [f.seq for f in link.frames if f.type == Type.STEP] == [
        (251 + i) % 256 for i in range(8)]
