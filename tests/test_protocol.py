"""The wire protocol: framing and CRC on the host, and the HDL protocol engine in Amaranth's
simulator: bit-exact steps through the driver, and bad bytes (random, flipped, cut off, too
long, unknown, replayed, lost) that never hang it and never change the array's state."""

import binascii
import random
import struct

import numpy as np
import pytest

from cellsp.sim.geometry import ArrayGeometry
from amaranth.sim import Simulator

from cellsp.hdl.frame_receiver import FrameReceiver
from cellsp.hdl.frames import ErrorCode, MessageType, ReplySource
from cellsp.hdl.protocol import ProtocolEngine
from cellsp.hdl.replies import ReplySender, StepQueue
from cellsp.host.amaranth_link import AmaranthLink
from cellsp.host.driver import (ConfigMismatch, DeviceError, DeviceTimeout, Driver,
                                StateDiverged, Transport)
from cellsp.sim.wire import (HEADER, MARKER, PREFIX, VERSION, Decoder, Error, Flags, Frame,
                             ProtocolLayout, Reply, Type, crc16, encode, frame_check,
                             maps_check, pack_bits, unpack_bits)
from cellsp.sim import GoldenModel, SPConfig
from .configs import TINY_BOOSTED as CFG

TIMEOUT_CYCLES = 3000


# ---------------------------------------------------------------------------- host framing

def test_crc_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1            # the catalog's check value
    data = random.Random(5).randbytes(40)
    assert crc16(data[17:], crc16(data[:17])) == crc16(data)     # resumes from a start value


def test_frames_round_trip_through_garbage_and_bad_crc():
    good = [Frame(Type.STEP, 7, bytes(range(40))), Frame(Type.IDENTIFY | Type.REPLY, 255, b""),
            Frame(Type.ERROR, 3, bytes([Error.BAD_CRC, 4]))]
    bad = bytearray(encode(Type.STEP, 9, b"xyz"))
    bad[6] ^= 0x10                                  # a flipped payload bit: CRC fails
    stream = b"\x00\x13" + good[0].encode() + bytes(bad) + bytes([MARKER]) + good[1].encode() \
        + good[2].encode()
    decoder = Decoder(max_payload=100)
    frames = []
    for i in range(0, len(stream), 5):             # in pieces, as a link delivers them
        frames += decoder.feed(stream[i:i + 5])
    assert frames == good
    assert decoder.dropped > 0


def test_bits_pack_lsb_first_in_raster_order():
    bits = np.zeros(11, bool)
    bits[[0, 9]] = True
    assert pack_bits(bits) == bytes([0x01, 0x02])
    assert (unpack_bits(pack_bits(bits), 11) == bits).all()


def test_layout_sizes():
    g = ArrayGeometry.for_config(SPConfig())
    lay = ProtocolLayout.for_geometry(g)
    assert lay.step_request == 1 + 32 and lay.step_reply == 6 + 4 + 128 and lay.word_bytes == 2
    assert sum(lay.chunk_size(i) for i in range(lay.chunks)) == g.state_words
    # the host accepts every reply: at 64x64 cells a step's reply outgrows a state chunk's
    big = ProtocolLayout.for_geometry(ArrayGeometry.for_config(SPConfig(cell_shape=(64, 64))))
    assert big.max_reply == big.step_reply == 6 + 4 + 512 > 6 + 2 + big.chunk_bytes


# ---------------------------------------------------------------------------- its parts

def test_gateware_enums_carry_the_wire_values():
    assert {m.name: m.value for m in MessageType} == {
        "NONE": Type.NONE, **{name: value for value, name in Type.names.items()}}
    assert {m.name: m.value for m in ErrorCode} == {
        name: getattr(Error, name) for name in dir(Error) if name.isupper()}


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_frame_receiver_holds_checked_frames_and_refuses_damaged_ones(geometry):
    """A good frame is held with its header and its payload in the buffer (two bytes a word)
    until taken; a bad CRC, a length over the longest payload and a frame cut off after its
    seq are held as refused, with the reason; a frame cut off before its seq is dropped."""
    lay = ProtocolLayout.for_geometry(geometry)
    dut = FrameReceiver(lay, timeout=20)
    payload = bytes(range(1, lay.step_request + 1))
    good = encode(Type.STEP, 9, payload)
    damaged = bytearray(encode(Type.RESET, 3))
    damaged[-1] ^= 0x40
    too_long = encode(Type.LOAD_CHUNK, 4, bytes(lay.max_payload + 1))[:5]
    streams = [(good, None), (bytes(damaged), ErrorCode.BAD_CRC),
               (too_long, ErrorCode.TOO_LONG), (good[:3], ErrorCode.TIMEOUT),
               (list(good[:2]) + [None] * 30 + list(good), None)]   # cut before its seq
    held = []

    async def bench(ctx):
        for data, _ in streams:
            pending = list(data)
            for _ in range(len(data) + 100):               # a frame held by then
                byte = pending[0] if pending else None         # None: an idle cycle
                ctx.set(dut.rx.valid, byte is not None)
                ctx.set(dut.rx.payload, byte or 0)
                _, _, ready, valid = await ctx.tick().sample(dut.rx.ready, dut.frames.valid)
                if pending and (ready or byte is None):
                    pending.pop(0)
                if valid:
                    break
            assert valid and not ctx.get(dut.rx.ready), f"no frame held after {data!r}"
            frame = ctx.get(dut.frames.payload)
            words = []
            for i in range((len(payload) + 1) // 2):
                ctx.set(dut.buffer.addr, 2 * i + 1)
                await ctx.tick()
                words.append(ctx.get(dut.buffer.word))
                assert ctx.get(dut.buffer.byte) == ctx.get(dut.buffer.word) >> 8
            held.append((frame, words))
            ctx.set(dut.frames.ready, 1)
            await ctx.tick()
            ctx.set(dut.frames.ready, 0)

    simulate(dut, bench)
    for (frame, words), (data, error) in zip(held, streams):
        assert frame.refused == (error is not None)
        if error is not None:
            assert frame.error == error
            continue
        assert (frame.type, frame.seq, frame.length) == (MessageType.STEP, 9, len(payload))
        assert frame.check == frame_check(good)
        assert struct.pack(f"<{len(words)}H", *words)[:len(payload)] == payload


def test_step_queue_keeps_steps_in_order_from_fed_to_packed_to_sent():
    """Steps pushed with consecutive seqs (across the wrap) come out in order, first to the
    packer, then to the sender; `room` keeps fewer than `window` in flight."""
    dut = StepQueue(window=4)

    async def bench(ctx):
        assert ctx.get(dut.empty) and ctx.get(dut.room) and not ctx.get(dut.packing.valid)
        ctx.set(dut.push.valid, 1)
        for seq in (254, 255, 0):
            ctx.set(dut.push.payload, seq)
            await ctx.tick()
        ctx.set(dut.push.valid, 0)
        assert not ctx.get(dut.room) and not ctx.get(dut.empty)
        assert ctx.get(dut.packing.payload) == 254 and not ctx.get(dut.sending.valid)
        for _ in range(2):                          # 254 and 255 packed
            ctx.set(dut.packing.ready, 1)
            await ctx.tick()
        ctx.set(dut.packing.ready, 0)
        assert ctx.get(dut.packing.payload) == 0 and ctx.get(dut.sending.payload) == 254
        ctx.set(dut.sending.ready, 1)
        await ctx.tick()
        ctx.set(dut.sending.ready, 0)
        assert ctx.get(dut.sending.payload) == 255 and ctx.get(dut.room)

    simulate(dut, bench)


def test_reply_sender_frames_each_source_as_the_wire_encodes_it(geometry):
    """A reply offered by the dispatcher leaves as `encode` frames it (its prefix: the check
    and the count of state changes), and is taken with its last byte."""
    lay = ProtocolLayout.for_geometry(geometry)
    dut = ReplySender(geometry)
    changes = 0x01020304
    identify = ProtocolLayout.identify_payload(geometry)
    cases = [  # type, seq, payload after the prefix, source, smalls, check
        (Type.RESET | Type.REPLY, 5, b"", ReplySource.SMALL, b"", 0x1234),
        (Type.ERROR, 0, bytes([Error.BAD_CRC, 7, Type.NONE]), ReplySource.SMALL,
         bytes([Error.BAD_CRC, 7, Type.NONE]), 0),
        (Type.IDENTIFY | Type.REPLY, 1, identify + bytes([2, 3, 0]), ReplySource.IDENTIFY,
         bytes([2, 3, 0]), 0xBEEF)]
    sent = []

    async def bench(ctx):
        ctx.set(dut.changes, changes)
        ctx.set(dut.tx.ready, 1)
        for type_, seq, body, source, smalls, check in cases:
            ctx.set(dut.replies.payload, {
                "type": type_, "seq": seq, "length": PREFIX + len(body), "check": check,
                "source": source, "small": list(smalls.ljust(3, b"\0")),
                "small_len": 0 if source == ReplySource.IDENTIFY else len(smalls), "slot": 0})
            ctx.set(dut.replies.valid, 1)
            frame = bytearray()
            while True:
                _, _, valid, byte, taken = await ctx.tick().sample(
                    dut.tx.valid, dut.tx.payload, dut.replies.ready)
                if valid:
                    frame.append(byte)
                if taken:
                    break
            ctx.set(dut.replies.valid, 0)
            await ctx.tick()
            sent.append(bytes(frame))

    simulate(dut, bench)
    for frame, (type_, seq, body, _, _, check) in zip(sent, cases):
        assert frame == encode(type_, seq, struct.pack("<HI", check, changes) + body)


# ---------------------------------------------------------------------------- the engine

class Lossy(Transport):
    """Wraps a transport: can drop the next reply, or damage the next request."""

    def __init__(self, inner):
        self.inner = inner
        self.drop_next_reply = False
        self.flip_next_request = False

    def write(self, data):
        if self.flip_next_request:
            self.flip_next_request = False
            data = bytearray(data)
            data[-3] ^= 0x01
            data = bytes(data)
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        if self.drop_next_reply and data:
            self.drop_next_reply = False
            return b""
        return data


@pytest.fixture(scope="module")
def geometry():
    return ArrayGeometry.for_config(CFG, input_width=6)


def connect(geometry, **kw):
    link = Lossy(AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES)))
    return link, Driver(link, geometry, timeout=0.2, **kw)


def trained_state(seed=0):
    model = GoldenModel(CFG)
    model.run(np.random.default_rng(seed).random((25,) + CFG.input_shape) < 0.4, learn=True)
    return model


def test_driver_steps_bit_exact_with_loads_reads_and_pipelining(geometry):
    link, driver = connect(geometry)
    golden = trained_state()
    driver.load_state(golden.state())
    assert driver.read_state().differences(golden.state()) == []
    X = np.random.default_rng(1).random((14,) + CFG.input_shape) < 0.4
    for x in X[:4]:
        active, cycles = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all() and cycles > 0
    out, cycles = driver.run(X[4:], learn=True, window=4)
    assert (out == golden.run(X[4:], learn=True)).all() and (cycles > 0).all()
    assert driver.read_state().differences(golden.state()) == []


def test_pipelined_steps_bit_exact_when_replies_leave_slower_than_the_array_steps(geometry):
    """A link that takes a reply byte one cycle in 4 (as a UART does; 32x32 cells at 4 per PE
    in Verilator are sender-bound too): the array finishes the next step while the sender still
    packs this one's rows, and publishes its rows the cycle the last row is taken. Each reply
    must take exactly its own rows (taking the next step's as well lost the last replies)."""
    link = AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES), tx_every=4)
    driver = Driver(link, geometry, timeout=0.2, retries=1)
    golden = trained_state(8)
    driver.load_state(golden.state())
    X = np.random.default_rng(9).random((24,) + CFG.input_shape) < 0.4
    for learn, part in ((True, X[:16]), (False, X[16:])):
        out, cycles = driver.run(part, learn=learn, window=8)
        assert (out == golden.run(part, learn=learn)).all() and (cycles > 0).all()
    assert driver.retried == 0
    assert driver.read_state().differences(golden.state()) == []


def test_lost_replies_and_damaged_requests_are_retried_without_double_steps(geometry):
    link, driver = connect(geometry)
    golden = trained_state(2)
    driver.load_state(golden.state())
    X = np.random.default_rng(3).random((6,) + CFG.input_shape) < 0.4
    for i, x in enumerate(X):
        link.drop_next_reply = i % 2 == 0          # the step runs, its reply is lost
        link.flip_next_request = i % 3 == 1        # the request arrives damaged
        active, _ = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all(), f"step {i}"
    assert driver.retried >= 4          # steps 0, 1, 2 and 4 each needed a resend
    assert driver.read_state().differences(golden.state()) == []


def test_fuzzed_byte_streams_never_hang_the_engine_nor_touch_the_array(geometry):
    link, driver = connect(geometry)
    golden = trained_state(4)
    driver.load_state(golden.state())
    lay = ProtocolLayout.for_geometry(geometry)
    rng = random.Random(5)
    X = np.random.default_rng(6).random((12,) + CFG.input_shape) < 0.4
    for round_ in range(12):
        kind = round_ % 6
        # aimed at the sequence number the engine expects: executed, it would change the state
        step_frame = encode(Type.STEP, driver.seq, bytes([1]) + pack_bits(X[-1]))
        if kind == 0:                              # random bytes, markers included
            junk = bytes(rng.choice([MARKER, rng.randrange(256)]) for _ in range(rng.randrange(1, 50)))
        elif kind == 1:                            # a valid frame with one flipped bit
            junk = bytearray(step_frame)
            junk[rng.randrange(1, len(junk))] ^= 1 << rng.randrange(8)
            junk = bytes(junk)
        elif kind == 2:                            # cut off: the engine must time out
            junk = step_frame[:rng.randrange(2, len(step_frame) - 1)]
        elif kind == 3:                            # a length beyond any request
            junk = bytes([MARKER, Type.STEP, 1]) + struct.pack("<H", lay.max_payload + 1)
        elif kind == 4:                            # unknown type, good CRC
            junk = encode(0x42, rng.randrange(256), b"hello")
        else:                                      # wrong length for its type, good CRC
            junk = encode(Type.STEP, rng.randrange(256), b"\x01\x02")
        link.write(junk)
        link.read(TIMEOUT_CYCLES * 2 / link.inner.cycles_per_second)   # let it time out
        x = X[round_]
        active, _ = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all(), f"round {round_} ({kind})"
    # a replayed old request is answered from the cache, not executed again; the same seq
    # with another input is refused (another request ran with it)
    seq = (driver.seq - 1) & 0xFF
    link.write(encode(Type.STEP, seq, bytes([1]) + pack_bits(X[11])))
    replies = Decoder().feed(link.read(0.2))
    assert [f.seq for f in replies] == [seq] and replies[0].type == Type.STEP | Type.REPLY
    link.write(encode(Type.STEP, seq, bytes([1]) + pack_bits(X[0])))
    assert Reply.parse(Decoder().feed(link.read(0.2))[0]).code == Error.CONFLICT
    assert driver.read_state().differences(golden.state()) == []


def test_error_replies_name_the_problem_and_the_request(geometry):
    link, driver = connect(geometry)
    frame = encode(Type.STEP, (driver.seq + 5) & 0xFF, bytes(lay_step(geometry)))
    link.write(frame)
    reply = Reply.parse(Decoder().feed(link.read(0.2))[0])
    assert reply.type == Type.ERROR and reply.code == Error.OUT_OF_ORDER
    assert reply.body[1] == driver.seq                    # the seq it expects
    assert (reply.request_type, reply.check) == (Type.STEP, frame_check(frame))
    link.write(encode(Type.LOAD_CHUNK, driver.seq, b"\x00\x00" + bytes(4)))
    reply = Reply.parse(Decoder().feed(link.read(0.2))[0])
    assert reply.code == Error.BAD_STATE                  # no LOAD_BEGIN before it
    # a frame it could not parse answers no request: no type, seq or check to claim
    bad = bytearray(encode(Type.STEP, driver.seq, bytes(lay_step(geometry))))
    bad[-1] ^= 1
    link.write(bytes(bad))
    frame = Decoder().feed(link.read(0.2))[0]
    reply = Reply.parse(frame)
    assert (reply.code, reply.request_type, frame.seq, reply.check) == (Error.BAD_CRC,
                                                                        Type.NONE, 0, 0)
    # a frame cut off is dropped after the engine's timeout, and said so (to no request)
    link.write(encode(Type.STEP, driver.seq, bytes(lay_step(geometry)))[:9])
    frames = Decoder().feed(link.read(3 * TIMEOUT_CYCLES / link.inner.cycles_per_second))
    assert [(f.seq, Reply.parse(f).code, Reply.parse(f).request_type) for f in frames] == [
        (0, Error.TIMEOUT, Type.NONE)]


def test_steps_during_an_unfinished_load_are_refused_by_name(geometry):
    link, driver = connect(geometry)
    driver._request(Type.LOAD_BEGIN, changes=1)           # and never finish it
    X = np.zeros((2,) + CFG.input_shape, bool)
    with pytest.raises(DeviceError, match="refused: request not valid now"):
        driver.run(X, learn=False)
    with pytest.raises(DeviceError, match="call connect"):
        driver.step(X[0], learn=False)                    # refused until connect()
    assert driver.connect()["loading"]
    driver.load_state(GoldenModel(CFG).state())           # a reset abandons the load first
    active, _ = driver.step(X[0], learn=False)
    assert (active == GoldenModel(CFG).step(X[0], learn=False)).all()


def lay_step(geometry):
    return bytes(ProtocolLayout.for_geometry(geometry).step_request)


def test_gateware_from_another_config_is_refused(geometry):
    other = ArrayGeometry.for_config(CFG.replace(seed=7), input_width=6)
    link = AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES))
    with pytest.raises(ConfigMismatch, match="rebuild the gateware from this config"):
        Driver(link, other, timeout=0.2)


def test_gateware_of_the_other_array_layout_is_refused_by_name(geometry):
    """The row-wide array takes the same state in the same number of words in another order:
    a host with the other layout, or another count of cells per PE, is refused at connect()
    (a load would put permanences into the wrong synapses), each with what to pass."""
    rows = ArrayGeometry.for_config(CFG, input_width=6, row_scan=True)
    assert rows.state_words == geometry.state_words
    for device, host, named in ((geometry, rows, "the serial array of this config, this host "
                                                 "drives the row-wide array"),
                                (rows, geometry, "the row-wide array of this config, this "
                                                 "host drives the serial array")):
        link = AmaranthLink(ProtocolEngine(device, timeout=TIMEOUT_CYCLES))
        with pytest.raises(ConfigMismatch, match=f"the gateware is {named}.*--array NAME"):
            Driver(link, host, timeout=0.2)
    banded = ArrayGeometry.for_config(CFG, input_width=6, cells_per_pe=CFG.cell_shape[1])
    link = AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES))
    with pytest.raises(ConfigMismatch, match="built with 1 cells per processing element, "
                                             "this host uses 3"):
        Driver(link, banded, timeout=0.2)
    # the row-wide device with its own layout: connected, a state loaded and read back
    link = AmaranthLink(ProtocolEngine(rows, timeout=TIMEOUT_CYCLES))
    driver = Driver(link, rows, timeout=0.2)
    driver.load_state(trained_state())
    assert driver.read_state().differences(trained_state()) == []


def test_identify_carries_a_band_pe_of_hundreds_of_cells():
    """A PE of 256 cells (a band of 4 rows of 64) is named whole: protocol 3 had a byte for
    it, and building such an array ended in an internal error."""
    banded = ArrayGeometry.for_config(SPConfig(input_shape=(32, 32), cell_shape=(64, 64)),
                                      cells_per_pe=256, row_scan=True)
    fields = struct.unpack(ProtocolLayout.IDENTIFY_FORMAT,
                           ProtocolLayout.identify_payload(banded))
    assert fields[:6] == (VERSION, 64, 64, 32, 32, 256)
    assert fields[6] == ProtocolLayout.layout_digest(banded.config, row_scan=True)


def test_gateware_of_protocol_1_is_named_not_taken_for_silent(geometry):
    """Protocol 1's IDENTIFY answer has no prefix, so it answers none of this driver's
    requests; connect() says which protocol the device speaks instead of timing out."""
    class Version1(Transport):
        def __init__(self):
            self.out = b""

        def write(self, data):
            for frame in Decoder().feed(data):
                if frame.type == Type.IDENTIFY:
                    old = bytes([1]) + ProtocolLayout.identify_payload(geometry)[1:]
                    self.out += encode(Type.IDENTIFY | Type.REPLY, frame.seq, old)

        def read(self, timeout):
            data, self.out = self.out, b""
            return data

    with pytest.raises(ConfigMismatch, match=f"protocol version 1, this host version {VERSION}: rebuild"):
        Driver(Version1(), geometry, timeout=0.01, retries=1)


def test_a_silent_device_times_out_with_a_clear_message(geometry):
    class Silent(Transport):
        def write(self, data):
            pass

        def read(self, timeout):
            return b""

    with pytest.raises(DeviceTimeout, match="no reply to IDENTIFY .* is the device running"):
        Driver(Silent(), geometry, timeout=0.01, retries=1)
    # while it waits, the driver says so (once), then gives up
    lines = []
    driver = Driver(Silent(), geometry, timeout=0.05, retries=3, connect=False,
                    log=lines.append)
    driver.quiet_s = 0.08
    with pytest.raises(DeviceTimeout):
        driver.connect()
    assert len(lines) == 1 and lines[0].startswith("waiting for the device: no answer to IDENTIFY")
    with pytest.raises(DeviceError, match="call connect"):
        driver.step(np.zeros(CFG.input_shape, bool), learn=False)


# ---------------------------------------------------------------------------- foreign frames

def test_a_foreign_error_with_the_next_seq_is_never_taken_for_the_answer(geometry):
    """A frame from elsewhere carrying the driver's next sequence number that the engine
    refuses (here a chunk with no load begun): its error answers that frame, not the driver's
    step, which the engine then runs. (Protocol 1's driver took the error as its answer, moved
    its seq back, and its next step got the cached reply of the step before.)"""
    link, driver = connect(geometry)
    golden = trained_state(10)
    driver.load_state(golden.state())
    X = np.random.default_rng(11).random((6,) + CFG.input_shape) < 0.4
    for i, x in enumerate(X):
        if i % 2 == 0:
            link.write(encode(Type.LOAD_CHUNK, driver.seq, b"\x00\x00" + bytes(4)))
        active, _ = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all(), f"step {i}"
    assert driver.ignored >= 3
    assert driver.read_state().differences(golden.state()) == []


@pytest.mark.parametrize("learn", [False, True])
def test_a_foreign_step_with_the_next_seq_is_refused_and_a_state_change_detected(geometry,
                                                                                 learn):
    """A valid STEP from elsewhere with the driver's next seq runs; the driver's own step with
    that seq is then refused by name (another request already ran with it), never answered
    with the other input's reply. A foreign learning step changed the state: connect() says so
    and steps are refused until a state is loaded."""
    link, driver = connect(geometry)
    golden = trained_state(12)
    driver.load_state(golden.state())
    X = np.random.default_rng(13).random((4,) + CFG.input_shape) < 0.4
    link.write(encode(Type.STEP, driver.seq, bytes([int(learn)]) + pack_bits(X[3])))
    # a foreign learning step: the refusal's count of state changes is one more than the host's
    error, message = ((StateDiverged, "a request from elsewhere ran") if learn else
                      (DeviceError, "another request already ran"))
    with pytest.raises(error, match=message):
        driver.step(X[0], learn=True)
    info = driver.connect()
    assert info["diverged"] == learn
    if learn:
        with pytest.raises(StateDiverged):
            driver.step(X[0], learn=True)
        driver.load_state(golden.state())
    for x in X:
        active, _ = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all()
    assert driver.read_state().differences(golden.state()) == []


def test_a_foreign_step_among_pipelined_steps_never_yields_a_wrong_output(geometry):
    link, driver = connect(geometry)
    golden = trained_state(14)
    driver.load_state(golden.state())
    X = np.random.default_rng(15).random((8,) + CFG.input_shape) < 0.4
    link.write(encode(Type.STEP, driver.seq, bytes([1]) + pack_bits(X[7])))
    with pytest.raises(DeviceError) as caught:
        driver.run(X, learn=True)
    done, _ = caught.value.partial
    assert len(done) == 0                    # the first step's seq was taken: nothing is done
    assert driver.connect()["diverged"]      # the foreign step (and maybe later ones) learned
    driver.load_state(golden.state())
    out, _ = driver.run(X, learn=True)
    assert (out == golden.run(X, learn=True)).all()


def test_connect_after_an_error_succeeds_with_stale_replies_on_the_line(geometry):
    link, driver = connect(geometry)
    driver.load_state(GoldenModel(CFG).state())
    x = np.zeros(CFG.input_shape, bool)
    driver.step(x, learn=False)
    old = encode(Type.STEP, (driver.seq - 1) & 0xFF, bytes([0]) + pack_bits(x))
    for _ in range(3):
        link.write(old)                       # cached replies to an old request
        link.write(encode(Type.IDENTIFY, driver.seq, b""))   # someone else's IDENTIFY
    info = driver.connect()
    assert info["cell_shape"] == CFG.cell_shape and not info["diverged"]
    active, _ = driver.step(x, learn=False)
    assert (active == GoldenModel(CFG).step(x, learn=False)).all()


# ---------------------------------------------------------------------------- single-bit errors

class FlipOnce(Transport):
    """Flips bit `request_bit` of the next frame written, or bit `reply_bit` of the next
    reply bytes read."""

    def __init__(self, inner):
        self.inner = inner
        self.request_bit = self.reply_bit = None

    def write(self, data):
        if self.request_bit is not None:
            data = bytearray(data)
            data[self.request_bit // 8] ^= 1 << self.request_bit % 8
            self.request_bit = None
        self.inner.write(bytes(data))

    def read(self, timeout):
        data = self.inner.read(timeout)
        if self.reply_bit is not None and len(data) > self.reply_bit // 8:
            data = bytearray(data)
            data[self.reply_bit // 8] ^= 1 << self.reply_bit % 8
            self.reply_bit = None
        return bytes(data)


def test_every_single_bit_error_in_every_field_is_retried_both_ways(geometry):
    """Each bit of a STEP request's header (marker, type, seq, both length bytes) and CRC, and
    a bit of each payload byte, and the same of its reply (header, prefix, cycles, outputs,
    CRC), flipped once: every step still returns the golden output, and none runs twice. (Protocol 1 refused a flipped high length byte
    as `frame too long`.)"""
    lay = ProtocolLayout.for_geometry(geometry)
    # the engine drops a frame cut off (or made longer) sooner than the driver resends it
    engine = AmaranthLink(ProtocolEngine(geometry, timeout=300))
    link = FlipOnce(engine)
    # timeouts in simulated seconds: the same retries however loaded the machine is
    driver = Driver(link, geometry, timeout=0.04, retries=6, clock=engine.clock)
    golden = trained_state(16)
    driver.load_state(golden.state())

    def bits(payload):
        """Every bit of the header and the CRC, one bit of each payload byte (each position)."""
        end = HEADER + payload
        return ([b for b in range(8 * HEADER)] + [8 * i + i % 8 for i in range(HEADER, end)]
                + [b for b in range(8 * end, 8 * end + 16)])
    cases = ([("request", b) for b in bits(lay.step_request)]
             + [("reply", b) for b in bits(lay.step_reply)])
    X = np.random.default_rng(17).random((len(cases),) + CFG.input_shape) < 0.4
    for (way, bit), x in zip(cases, X):
        setattr(link, f"{way}_bit", bit)
        active, _ = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all(), f"{way} bit {bit}"
    assert driver.retried >= len(cases)
    assert driver.read_state().differences(golden.state()) == []


# ---------------------------------------------------------------------------- corners

class DropReplies(Transport):
    """Wraps a transport: loses the next replies of the types in `drop` ({request type: how
    many}), whole, as a line that drops them would; `dropped` counts them by type."""

    def __init__(self, inner):
        self.inner = inner
        self.drop: dict[int, int] = {}
        self.dropped: dict[int, int] = {}
        self.decoder = Decoder()

    def write(self, data):
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        for frame in self.decoder.feed(data):
            kind = frame.type & ~Type.REPLY
            if frame.type != Type.ERROR and self.drop.get(kind):
                self.drop[kind] -= 1
                self.dropped[kind] = self.dropped.get(kind, 0) + 1
                return b""
        return data


def test_a_lost_reply_to_every_request_type_is_recovered_and_applied_once(geometry):
    """The reply to IDENTIFY, LOAD_BEGIN, the first and the last LOAD_CHUNK, STEP (learning
    and not), READ_BEGIN, the first and the last READ_CHUNK and RESET is lost once each: the
    driver resends the request with its number and check, the engine answers it again without
    executing it again (the driver's count of state changes would differ, and a second
    LOAD_BEGIN or READ_BEGIN would be refused), and every answer is the right one: the state
    read back and every step equal the golden model's."""
    lay = ProtocolLayout.for_geometry(geometry)
    assert lay.chunks == 2                       # so the first and the last chunk differ
    # a wait for a lost reply simulates a thousand cycles at a time (a chunk's worth)
    link = DropReplies(AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES),
                                    cycles_per_second=20_000))
    driver = Driver(link, geometry, timeout=0.2, retries=6, connect=False)
    link.drop = {Type.IDENTIFY: 1}
    assert driver.connect()["cell_shape"] == CFG.cell_shape
    golden = trained_state(20)
    link.drop = {Type.LOAD_BEGIN: 1, Type.LOAD_CHUNK: 2}
    driver.load_state(golden.state())
    X = np.random.default_rng(21).random((2,) + CFG.input_shape) < 0.4
    for x, learn in zip(X, (True, False)):
        link.drop = {Type.STEP: 1}
        active, _ = driver.step(x, learn=learn)
        assert (active == golden.step(x, learn=learn)).all()
    link.drop = {Type.READ_BEGIN: 1, Type.READ_CHUNK: 2}
    assert driver.read_state().differences(golden.state()) == []
    link.drop = {Type.RESET: 1}
    driver.reset()
    assert link.dropped == {Type.IDENTIFY: 1, Type.LOAD_BEGIN: 1, Type.LOAD_CHUNK: 2,
                            Type.STEP: 2, Type.READ_BEGIN: 1, Type.READ_CHUNK: 2, Type.RESET: 1}
    assert driver.retried >= sum(link.dropped.values())
    changes = driver.changes            # the host's count: a request run twice would differ
    info = driver.connect()
    assert (info["changes"], info["loading"], info["reading"]) == (changes, False, False)
    assert driver.diverged == "the device was reset"


def exchange(link, type_, seq, payload=b""):
    """Send one frame; the one frame that answers it, parsed."""
    frame = encode(type_, seq, payload)
    link.write(frame)
    replies = [Reply.parse(f) for f in Decoder().feed(link.read(0.2))]
    assert len(replies) == 1, f"{len(replies)} replies to {Type.names.get(type_)} seq {seq}"
    return replies[0], frame_check(frame)


def test_replays_at_the_edges_of_the_reply_cache(geometry):
    """A STEP replayed exactly `reply_window` (8) behind, the oldest cached, gets its cached
    reply (the same active cells and cycles); one more behind is refused as out of order, and
    at the edge with another input as a conflict. The last other request replayed is answered
    again (a chunk with its words), the one before it is refused. Nothing of a replay runs."""
    lay = ProtocolLayout.for_geometry(geometry)
    link, driver = connect(geometry)
    golden = trained_state(22)
    driver.load_state(golden.state())
    window = lay.reply_window
    X = np.random.default_rng(23).random((window + 2,) + CFG.input_shape) < 0.4
    payloads = [bytes([1]) + pack_bits(x) for x in X]
    replies = []
    for x, payload in zip(X, payloads):
        seq = driver.seq
        active, cycles = driver.step(x, learn=True)
        assert (active == golden.step(x, learn=True)).all()
        replies.append((seq, active, cycles))
    expected = driver.seq
    oldest = len(X) - window                       # exactly `window` behind
    seq, active, cycles = replies[oldest]
    assert (expected - seq) & 0xFF == window
    reply, check = exchange(link.inner, Type.STEP, seq, payloads[oldest])
    assert (reply.type, reply.seq, reply.check) == (Type.STEP | Type.REPLY, seq, check)
    assert struct.unpack_from("<I", reply.body)[0] == cycles
    assert (unpack_bits(reply.body[4:], CFG.num_cells).reshape(CFG.cell_shape) == active).all()
    reply, _ = exchange(link.inner, Type.STEP, seq, payloads[oldest - 1])
    assert (reply.type, reply.code) == (Type.ERROR, Error.CONFLICT)
    seq = replies[oldest - 1][0]                    # one more behind: no longer cached
    reply, _ = exchange(link.inner, Type.STEP, seq, payloads[oldest - 1])
    assert (reply.type, reply.code, reply.body[1]) == (Type.ERROR, Error.OUT_OF_ORDER, expected)
    # the last request of another type: answered again; the one before: refused
    state = driver.read_state()
    assert state.differences(golden.state()) == []
    last = (driver.seq - 1) & 0xFF
    index = struct.pack("<H", lay.chunks - 1)
    again, _ = exchange(link.inner, Type.READ_CHUNK, last, index)
    assert again.type == Type.READ_CHUNK | Type.REPLY and again.body[:2] == index
    words = geometry.state_to_words(golden.state())[(lay.chunks - 1) * lay.chunk_words:]
    assert again.body[2:] == b"".join(w.to_bytes(lay.word_bytes, "little") for w in words)
    before, _ = exchange(link.inner, Type.READ_CHUNK, (last - 1) & 0xFF,
                         struct.pack("<H", lay.chunks - 2))
    assert (before.type, before.code) == (Type.ERROR, Error.OUT_OF_ORDER)
    active, _ = driver.step(X[0], learn=True)
    assert (active == golden.step(X[0], learn=True)).all()
    assert driver.read_state().differences(golden.state()) == []


#: 4x4 input bits: a 3-byte STEP request; 8-bit state words: a load's last chunk of an odd
#: number of bytes
ODD = SPConfig(input_shape=(4, 4), cell_shape=(3, 3), potential_radius=1, perm_bits=6,
               connected_threshold=32, init_spread=16, perm_inc=5, perm_dec=3, perm_bump=4,
               duty_bits=6, duty_period_log2=2, boost_strength=1.0, stimulus_threshold=1)


def test_odd_payload_lengths_are_carried_and_wrong_ones_refused():
    """A config whose STEP request and last state chunk have odd lengths runs bit-exact
    through the driver; every request one byte too short or too long is refused (wrong
    length) and changes nothing."""
    geometry = ArrayGeometry.for_config(ODD, input_width=4)
    lay = ProtocolLayout.for_geometry(geometry)
    last_chunk = 2 + lay.chunk_size(lay.chunks - 1) * lay.word_bytes
    assert lay.step_request % 2 == 1 and lay.word_bytes == 1 and last_chunk % 2 == 1
    link = AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES))
    driver = Driver(link, geometry, timeout=0.2)
    golden = GoldenModel(ODD)
    golden.run(np.random.default_rng(24).random((10,) + ODD.input_shape) < 0.5, learn=True)
    driver.load_state(golden.state())
    X = np.random.default_rng(25).random((6,) + ODD.input_shape) < 0.5
    out, _ = driver.run(X, learn=True)
    assert (out == golden.run(X, learn=True)).all()
    lengths = {Type.IDENTIFY: 0, Type.STEP: lay.step_request, Type.LOAD_BEGIN: 0,
               Type.READ_BEGIN: 0, Type.READ_CHUNK: 2, Type.RESET: 0}
    for type_, length in lengths.items():
        for wrong in (length - 1, length + 1):
            if wrong < 0:
                continue
            reply, _ = exchange(link, type_, driver.seq, bytes([1]) * wrong)
            assert (reply.type, reply.code, reply.request_type) == (
                Type.ERROR, Error.BAD_LENGTH, type_), f"{Type.names[type_]} length {wrong}"
    assert driver.connect()["diverged"] is False
    assert driver.read_state().differences(golden.state()) == []
    active, _ = driver.step(X[0], learn=False)
    assert (active == golden.step(X[0], learn=False)).all()


# ---------------------------------------------------------------------------- BATCH (learning
# without the output maps)

class LoseBatch(Transport):
    """Wraps a transport: loses the next BATCH request whole (`lose`), damages one byte of the
    next (`damage`), or loses the next BATCH reply (`drop_reply`); counts each."""

    def __init__(self, inner):
        self.inner = inner
        self.lose = self.damage = self.drop_reply = 0
        self.done = {"lost": 0, "damaged": 0, "dropped": 0}
        self.decoder = Decoder()

    def write(self, data):
        if data[:2] == bytes([MARKER, Type.BATCH]):
            if self.lose:
                self.lose -= 1
                self.done["lost"] += 1
                return
            if self.damage:
                self.damage -= 1
                self.done["damaged"] += 1
                data = bytearray(data)
                data[HEADER + 2] ^= 0xFF               # 8 input bits of a quiet step
                data = bytes(data)
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        if self.drop_reply and any(f.type == Type.BATCH | Type.REPLY
                                   for f in self.decoder.feed(data)):
            self.drop_reply -= 1
            self.done["dropped"] += 1
            return b""
        return data


def test_batched_learning_is_bit_exact_by_count_and_check(geometry):
    """BATCH requests (8 inputs each here, the last one short, all in flight) learn exactly
    as the golden model: the reply's count is every step sent, its check the CRC-32 of the golden model's
    maps, the state read back the golden model's; a STEP between two runs does not enter the
    check, and the next run's check restarts."""
    link, driver = connect(geometry)
    lay = ProtocolLayout.for_geometry(geometry)
    assert driver.batch_steps == lay.batch_steps == 8
    golden = trained_state(30)
    driver.load_state(golden.state())
    X = np.random.default_rng(31).random((19,) + CFG.input_shape) < 0.4
    changes = driver.changes
    want = maps_check(golden.run(X, learn=True))
    assert driver.run(X, learn=True, outputs=False, window=8) == (19, want)   # 3 in flight
    assert driver.changes == changes + 19
    active, _ = driver.step(X[0], learn=True)
    assert (active == golden.step(X[0], learn=True)).all()
    want = maps_check(golden.run(X[:3], learn=False))
    assert driver.run(X[:3], learn=False, outputs=False) == (3, want)
    assert driver.read_state().differences(golden.state()) == []


def test_lost_damaged_and_unanswered_batches_are_recovered_and_applied_once(geometry):
    """A BATCH lost whole (its quiet steps never arrive: the next is out of order), one
    damaged in an input (its CRC fails: nothing of it runs) and one whose reply is lost (the
    retry gets the cached reply): each is resent from the first unapplied step, no step is
    applied twice (the counts of steps and of state changes, the check and the state read
    back are the golden model's)."""
    # a wait for a lost frame simulates 4,000 cycles (a few BATCHes' worth)
    link = LoseBatch(AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES),
                                  cycles_per_second=20_000))
    driver = Driver(link, geometry, timeout=0.2, retries=4)
    golden = trained_state(32)
    driver.load_state(golden.state())
    X = np.random.default_rng(33).random((27,) + CFG.input_shape) < 0.4
    changes = driver.changes
    for fault, part in zip(("damage", "lose", "drop_reply"), (X[:9], X[9:18], X[18:])):
        setattr(link, fault, 1)             # each alone: the first BATCH of the run
        assert driver.run(part, learn=True, outputs=False) == (
            9, maps_check(golden.run(part, learn=True))), fault
    assert link.done == {"lost": 1, "damaged": 1, "dropped": 1}
    assert driver.retried >= 3 and driver.changes == changes + 27
    assert driver.connect()["changes"] == changes + 27
    assert driver.read_state().differences(golden.state()) == []


def test_batch_replays_and_wrong_lengths_change_nothing(geometry):
    """A BATCH replayed (same seq and check) gets its cached reply without running again; a
    STEP with its seq is a conflict; BATCH lengths other than the flags byte and 1 to
    `batch_steps` whole inputs are refused; none of it changes the state."""
    lay = ProtocolLayout.for_geometry(geometry)
    link, driver = connect(geometry)
    golden = trained_state(34)
    driver.load_state(golden.state())
    X = np.random.default_rng(35).random((3,) + CFG.input_shape) < 0.4
    payload = bytes([Flags.LEARN | Flags.RESTART]) + b"".join(pack_bits(x) for x in X)
    seq = driver.seq
    first, check = exchange(link.inner, Type.BATCH, seq, payload)
    assert (first.type, first.check) == (Type.BATCH | Type.REPLY, check)
    assert struct.unpack_from("<II", first.body) == (3, maps_check(golden.run(X, learn=True)))
    again, _ = exchange(link.inner, Type.BATCH, seq, payload)
    assert again == first
    step, _ = exchange(link.inner, Type.STEP, seq, payload[:lay.step_request])
    assert (step.type, step.code) == (Type.ERROR, Error.CONFLICT)
    for length in (1, lay.batch_request(1) - 1, lay.batch_request(2) + 1,
                   lay.batch_request(lay.batch_steps + 1)):
        reply, _ = exchange(link.inner, Type.BATCH, (seq + 1) & 0xFF, bytes([1]) * length)
        assert (reply.type, reply.code) == (Type.ERROR, Error.BAD_LENGTH), length
    driver.seq = (seq + 1) & 0xFF
    driver.changes += 3
    assert driver.connect()["diverged"] is False
    assert driver.read_state().differences(golden.state()) == []


def test_an_engine_without_batch_refuses_it_and_the_driver_checks_on_the_host(geometry):
    """`batching=False` (the iCEBreaker's): IDENTIFY reports no BATCH, a BATCH is an unknown
    type, and `run(outputs=False)` sends STEPs and computes the same count and check."""
    link = AmaranthLink(ProtocolEngine(geometry, timeout=TIMEOUT_CYCLES, batching=False))
    driver = Driver(link, geometry, timeout=0.2)
    assert driver.batch_steps == 0
    golden = trained_state(36)
    driver.load_state(golden.state())
    X = np.random.default_rng(37).random((5,) + CFG.input_shape) < 0.4
    assert driver.run(X, learn=True, outputs=False) == (5, maps_check(golden.run(X, learn=True)))
    reply, _ = exchange(link, Type.BATCH, driver.seq, bytes([1]) + pack_bits(X[0]))
    assert (reply.type, reply.code) == (Type.ERROR, Error.UNKNOWN_TYPE)
    assert driver.read_state().differences(golden.state()) == []


def test_the_running_check_is_crc32_of_the_packed_maps():
    maps = np.random.default_rng(38).random((3, 3, 3)) < 0.5
    data = b"".join(pack_bits(a) for a in maps)
    assert maps_check(maps) == binascii.crc32(data)
    assert maps_check(maps[1:], maps_check(maps[:1])) == maps_check(maps)
