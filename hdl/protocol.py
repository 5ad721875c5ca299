"""The protocol engine: the framed byte protocol of host/PROTOCOL.md in front of the cell array.

One engine for every target (Verilator, boards): bytes in on `rx`, bytes out on `tx`. Its parts,
joined by streams (and the cache and chunk memories between them)::

    rx -> FrameReceiver -frames-> RequestDispatcher -replies-> ReplySender -> tx
                                    |  ExecutedRequests             ^
                                    |  InputFeeder -> the array's inputs
                                    |  StateTransfer <-> the array's state words
                                    '-steps-> StepQueue -sending----'
                                                 '-packing-> StepPacker <- the array's outputs

The receiver takes each whole frame into its buffer and checks its CRC before the dispatcher
sees it, so a damaged frame never reaches the array. The dispatcher executes the requests in
order. A new STEP is fed to the array and left to the packer (which puts the step's rows into
the reply cache) and the sender, while the receiver goes on to the next frame: with requests in
flight, the next input is received and fed while the array works (it keeps it in a shadow
plane) and the last reply goes out meanwhile (the array keeps its rows in a buffer). Any other
request, and any error, waits until the replies before it are out. Sequence numbers make
retries safe: a request is executed only when its number is the next expected one; a repeat of
an executed request (same number and check, a retry after a lost reply) gets the reply again
without being executed twice (STEP replies are kept for the last `reply_window` steps), and
another request with a used number is refused. Every reply echoes its request's check and
carries the count of state changes (learning steps, loads, resets). A frame cut off midway is
dropped after `timeout` cycles without a byte.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.crc.catalog import CRC16_CCITT_FALSE
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import MARKER, PREFIX, Error, ProtocolLayout, Type

from .array import CellArray, Command

__all__ = ["ProtocolEngine", "MessageType", "ErrorCode", "ReplySource", "frame_layout",
           "reply_layout", "FrameReceiver", "RequestDispatcher", "ExecutedRequests",
           "InputFeeder", "StateTransfer", "StateMover", "answer_layout", "StepQueue",
           "StepPacker", "ReplySender"]


class MessageType(enum.Enum, shape=8):
    """A frame's type byte (the values of `cellsp.sim.wire.Type`); a reply's type is its
    request's | `Type.REPLY`, which is no member."""
    NONE = Type.NONE
    IDENTIFY = Type.IDENTIFY
    STEP = Type.STEP
    LOAD_BEGIN = Type.LOAD_BEGIN
    LOAD_CHUNK = Type.LOAD_CHUNK
    READ_BEGIN = Type.READ_BEGIN
    READ_CHUNK = Type.READ_CHUNK
    RESET = Type.RESET
    ERROR = Type.ERROR


class ErrorCode(enum.Enum, shape=8):
    """An ERROR reply's code (the values of `cellsp.sim.wire.Error`)."""
    BAD_CRC = Error.BAD_CRC
    TOO_LONG = Error.TOO_LONG
    BAD_LENGTH = Error.BAD_LENGTH
    UNKNOWN_TYPE = Error.UNKNOWN_TYPE
    OUT_OF_ORDER = Error.OUT_OF_ORDER
    TIMEOUT = Error.TIMEOUT
    BAD_STATE = Error.BAD_STATE
    CONFLICT = Error.CONFLICT


class ReplySource(enum.Enum, shape=2):
    """Where a reply's payload after its prefix comes from."""
    SMALL = 0       # the reply's `small` bytes only
    CACHE = 1       # a slot of the reply cache, which holds the whole payload, prefix included
    CHUNK = 2       # the `small` bytes, then the chunk buffer
    IDENTIFY = 3    # IDENTIFY's constant bytes, then the three `small` bytes (the status)


def frame_layout() -> data.StructLayout:
    """A received frame's header: its type, seq and payload length, its check (the CRC field,
    which every reply echoes), and whether it was refused (`error` says why)."""
    return data.StructLayout({"type": MessageType, "seq": 8, "length": 16, "check": 16,
                              "refused": 1, "error": ErrorCode})


def reply_layout(window: int) -> data.StructLayout:
    """A reply to send: type, seq, payload length (prefix included), the prefix's check, the
    payload's source, up to three bytes of its own, and the cache slot (source CACHE)."""
    return data.StructLayout({"type": 8, "seq": 8, "length": 16, "check": 16,
                              "source": ReplySource, "small": data.ArrayLayout(8, 3),
                              "small_len": 2, "slot": range(window)})


def slot_of(seq, window: int):
    """A sequence number's slot in the reply cache (`window` slots, a power of two)."""
    return seq[:max(1, (window - 1).bit_length())] if window > 1 else Const(0, 1)


def cache_stride(layout: ProtocolLayout) -> int:
    """Bytes of one reply cache slot: a STEP's reply payload, rounded up to a power of two."""
    return 1 << (layout.step_reply - 1).bit_length()


def set_reply(m, register, type_, seq, length, check, source, smalls, small_len):
    """Sets a reply register (of `reply_layout`) in the next cycle; `length` counts the payload
    after the prefix (a cache slot holds its own prefix)."""
    cached = source is ReplySource.CACHE        # a value (an answer's source) is never CACHE
    m.d.sync += [register.type.eq(type_), register.seq.eq(seq),
                 register.length.eq(length + (0 if cached else PREFIX)),
                 register.check.eq(check), register.source.eq(source),
                 register.small_len.eq(small_len)]
    for i, v in enumerate(smalls):
        m.d.sync += register.small[i].eq(v)


def buffer_signature(max_payload: int) -> wiring.Signature:
    """Reads of the receiver's buffer, the held frame's payload.

    Members (from the reader's side)
        addr: Out(range(max_payload + 1))   a byte address
        word: In(16)    the two bytes at the address of the cycle before, rounded down to
                        even (the even byte in bits 0-7)
        byte: In(8)     the byte at the address of the cycle before
    """
    return wiring.Signature({"addr": Out(range(max_payload + 1)), "word": In(16),
                             "byte": In(8)})


def step_record_signature(window: int) -> wiring.Signature:
    """The packer's view of the step it packs, kept by the dispatcher.

    Members (from the packer's side)
        busy: Out(1)     the packer is packing a step (it then owns the checks' read port)
        slot: Out(...)   that step's cache slot
        done: Out(1)     its reply is complete in the cache (a retry may be answered from it)
        check: In(16)    its request's check, a cycle after `slot` is presented with `busy`
        learn: In(1)     its learn flag
    """
    return wiring.Signature({"busy": Out(1), "slot": Out(range(window)), "done": Out(1),
                             "check": In(16), "learn": In(1)})


class FrameReceiver(wiring.Component):
    """Receives frames from `rx`, checks them, and holds each on `frames` until it is taken.

    Members
        rx: In(stream.Signature(8))        the bytes in; not ready while a frame is held
        frames: Out(stream.Signature(frame_layout()))
            valid from the cycle after a frame's last byte (or after it was refused: bad CRC,
            too long, or cut off after its seq) until `ready`; `ready` means the frame's
            payload is no longer needed, and the next cycle hunts for the next marker
        buffer: In(buffer_signature(max_payload))
            the held frame's payload, read a cycle after `addr`

    A frame cut off before its seq byte is dropped silently after `timeout` idle cycles.
    """

    def __init__(self, layout: ProtocolLayout, timeout: int):
        self.max_payload = layout.max_payload
        self.timeout = timeout
        self.depth = (layout.max_payload + 1) // 2
        super().__init__({
            "rx": In(stream.Signature(8)),
            "frames": Out(stream.Signature(frame_layout())),
            "buffer": In(buffer_signature(self.max_payload)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC16_CCITT_FALSE(data_width=8).create()
        m.submodules.payload = payload = Memory(shape=16, depth=self.depth, init=[])
        write, read = payload.write_port(granularity=8), payload.read_port()
        high = Signal()                # the byte read is its word's odd one
        m.d.comb += [read.addr.eq(self.buffer.addr >> 1), self.buffer.word.eq(read.data),
                     self.buffer.byte.eq(read.data.word_select(high, 8))]
        m.d.sync += high.eq(self.buffer.addr[0])

        header = Signal(frame_layout())
        count = Signal(16)             # bytes received in the current field
        crc_lo = Signal(8)
        idle_cycles = Signal(range(self.timeout + 1))
        have_seq = Signal()            # the seq byte of the current frame has been received
        m.d.comb += [self.frames.payload.eq(header), self.frames.payload.check.eq(crc.crc),
                     crc.data.eq(self.rx.payload)]
        byte = self.rx.payload

        def refuse(m, code):
            """An error found while receiving a frame (its type and seq may be damaged)."""
            m.d.sync += [header.refused.eq(1), header.error.eq(code)]
            m.next = "HELD"

        def timed(m):
            """Count idle cycles inside a frame; drop it after `timeout`."""
            with m.If(self.rx.valid):
                m.d.sync += idle_cycles.eq(0)
            with m.Elif(idle_cycles == self.timeout):
                with m.If(have_seq):
                    refuse(m, ErrorCode.TIMEOUT)
                with m.Else():
                    m.next = "HUNT"
            with m.Else():
                m.d.sync += idle_cycles.eq(idle_cycles + 1)

        with m.FSM(init="HUNT"):
            with m.State("HUNT"):
                m.d.comb += [self.rx.ready.eq(1), crc.start.eq(1)]
                m.d.sync += [count.eq(0), idle_cycles.eq(0), have_seq.eq(0),
                             header.refused.eq(0)]
                with m.If(self.rx.valid & (byte == MARKER)):
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += self.rx.ready.eq(1)
                timed(m)
                with m.If(self.rx.valid):
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += count.eq(count + 1)
                    with m.Switch(count):
                        with m.Case(0):
                            m.d.sync += header.type.eq(byte)
                        with m.Case(1):
                            m.d.sync += [header.seq.eq(byte), have_seq.eq(1)]
                        with m.Case(2):
                            m.d.sync += header.length[:8].eq(byte)
                        with m.Case(3):
                            length = Cat(header.length[:8], byte)
                            m.d.sync += [header.length.eq(length), count.eq(0)]
                            with m.If(length > self.max_payload):
                                refuse(m, ErrorCode.TOO_LONG)
                            with m.Elif(length == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                m.d.comb += self.rx.ready.eq(1)
                timed(m)
                m.d.comb += [write.addr.eq(count >> 1), write.data.eq(byte.replicate(2)),
                             write.en.eq(Mux(self.rx.valid, Mux(count[0], 0b10, 0b01), 0))]
                with m.If(self.rx.valid):
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == header.length - 1):
                        m.d.sync += count.eq(0)
                        m.next = "CRC"

            with m.State("CRC"):
                m.d.comb += self.rx.ready.eq(1)
                timed(m)
                with m.If(self.rx.valid):
                    with m.If(count == 0):
                        m.d.sync += [crc_lo.eq(byte), count.eq(1)]
                    with m.Elif(Cat(crc_lo, byte) != crc.crc):
                        refuse(m, ErrorCode.BAD_CRC)
                    with m.Else():
                        m.next = "HELD"

            with m.State("HELD"):
                m.d.comb += self.frames.valid.eq(1)
                with m.If(self.frames.ready):
                    m.next = "HUNT"
        return m


class InputFeeder(wiring.Component):
    """Feeds a STEP request's payload (in the receiver's buffer) to the array's `inputs`.

    Members
        start: In(1)       feed the step whose payload is in the buffer; `addr` must be 0 in
                           this cycle (the flags byte is read in the next)
        addr: Out(...)     the byte address (even) of the buffer word to read next
        word: In(16)       the buffer word at the address of the cycle before
        inputs: Out(stream.Signature(...))   beats of `input_width` bits and the learn flag
        learn: Out(1)      the step's learn flag, from the cycle after `start`
        done: Out(1)       the last beat is taken in this cycle

    A beat of up to 16 bits leaves every cycle the array takes it.
    """

    def __init__(self, geometry: ArrayGeometry, inputs: wiring.Signature):
        self.geometry = geometry
        layout = ProtocolLayout.for_geometry(geometry)
        self.step_request = layout.step_request
        super().__init__({
            "start": In(1),
            "addr": Out(range(layout.max_payload + 1)),
            "word": In(16),
            "inputs": Out(inputs),
            "learn": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        g = self.geometry
        iw = g.input_width
        m = Module()
        acc = Signal(iw + 16)          # input bits from buffer words, taken `iw` at a time
        nacc = Signal(range(iw + 17))
        idx = Signal(16)               # byte index into the buffer
        beat = Signal(range(g.beats_per_input + 1))
        inputs, word = self.inputs, self.word
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [idx.eq(2), beat.eq(0)]
                    m.next = "FLAGS"

            with m.State("FLAGS"):
                # the buffer's first word: the flags, and the input's first byte
                m.d.sync += [self.learn.eq(word[0]), acc.eq(word[8:]), nacc.eq(8)]
                m.d.comb += self.addr.eq(2)
                m.next = "FEED"

            with m.State("FEED"):
                # `word` holds buffer bytes idx and idx + 1 (idx even); top up the accumulator
                # with both, offer full beats (a word is taken in the same cycle as a beat
                # leaves: a cycle a beat of up to 16 bits). Past the payload's last byte the
                # word's other byte is counted but never offered: the beats end before it.
                m.d.comb += [inputs.payload.bits.eq(acc[:iw]),
                             inputs.payload.learn.eq(self.learn),
                             inputs.valid.eq(nacc >= iw)]
                taken = inputs.valid & inputs.ready
                shifted = Mux(taken, acc >> iw, acc)
                left = Signal.like(nacc)
                m.d.comb += left.eq(Mux(taken, nacc - iw, nacc))
                take = (left < iw) & (idx <= self.step_request - 1)
                m.d.comb += self.addr.eq(Mux(take, idx + 2, idx))
                with m.If(take):
                    m.d.sync += [acc.eq(shifted | (word << left)), nacc.eq(left + 16),
                                 idx.eq(idx + 2)]
                with m.Else():
                    m.d.sync += [acc.eq(shifted), nacc.eq(left)]
                with m.If(taken):
                    with m.If(beat == g.beats_per_input - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
        return m


class StepQueue(wiring.Component):
    """The STEPs in flight: fed to the array, their replies not yet sent, in order.

    Their sequence numbers run on from the oldest (the dispatcher takes only new STEPs while
    any is in flight), so two counts and the oldest number describe the queue.

    Members
        push: In(stream.Signature(8))      a step fed to the array, its seq; always ready
        packing: Out(stream.Signature(8))  the oldest step whose reply is not yet in the
                                           cache; `ready`: it is now
        sending: Out(stream.Signature(8))  the oldest step whose reply is in the cache but
                                           not sent; `ready`: its sending begins
        empty: Out(1)                      no step in flight
        room: Out(1)                       one more step keeps the cache slots of all apart
    """

    def __init__(self, window: int):
        self.window = window
        super().__init__({
            "push": In(stream.Signature(8)),
            "packing": Out(stream.Signature(8)),
            "sending": Out(stream.Signature(8)),
            "empty": Out(1),
            "room": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # Fewer than `window` keeps their cache slots apart (the array holds 4 at most: the
        # input fed, the one it works on, its rows buffer and the rows being packed).
        jobs = Signal(range(self.window))      # not yet packed
        unsent = Signal(range(self.window))    # packed, not yet sent
        job_seq = Signal(8)                    # the oldest not yet packed
        pushed = self.push.valid
        packed = self.packing.valid & self.packing.ready
        taken = self.sending.valid & self.sending.ready
        m.d.comb += [self.push.ready.eq(1),
                     self.packing.valid.eq(jobs != 0), self.packing.payload.eq(job_seq),
                     self.sending.valid.eq(unsent != 0),
                     self.sending.payload.eq((job_seq - unsent)[:8]),
                     self.empty.eq((jobs == 0) & (unsent == 0)),
                     self.room.eq(jobs + unsent < self.window - 1)]
        m.d.sync += [jobs.eq(jobs + pushed - packed), unsent.eq(unsent + packed - taken)]
        with m.If(packed):
            m.d.sync += job_seq.eq(job_seq + 1)
        with m.Elif(pushed & (jobs == 0)):
            m.d.sync += job_seq.eq(self.push.payload)
        return m


class StepPacker(wiring.Component):
    """Packs the array's rows of the oldest step in flight into its slot of the reply cache.

    Members
        jobs: In(stream.Signature(8))    the step to pack (its seq); taken when its reply is
                                         complete in the cache
        rows: In(stream.Signature(...))  the array's `outputs`: exactly h rows a step
        cache: In(WritePort.Signature(...))   the reply cache
        record: Out(step_record_signature(window))   the step's check and learn flag
        changes: In(32)                  the count of state changes
        state_changed: Out(1)            the step's learning counts as a change (in the cycle
                                         its reply's prefix begins)

    A slot holds the reply's whole payload: the prefix (the request's check, the state changes
    with this step's learning), the step's cycles (u32) and the active cells. A row of up to 16
    cells takes 2 cycles (a byte out and a row in may share one), the prefix and cycles 10.
    """

    def __init__(self, geometry: ArrayGeometry, rows: wiring.Member):
        self.geometry = geometry
        self.layout = layout = ProtocolLayout.for_geometry(geometry)
        self.stride = cache_stride(layout)
        window = layout.reply_window
        super().__init__({
            "jobs": In(stream.Signature(8)),
            "rows": rows,
            "cache": In(WritePort.Signature(addr_width=ceil_log2(window * self.stride),
                                            shape=8)),
            "record": Out(step_record_signature(window)),
            "changes": In(32),
            "state_changed": Out(1),
        })

    def elaborate(self, platform):
        h, w = self.geometry.config.cell_shape
        stride = self.stride
        m = Module()
        oacc = Signal(w + 8)
        onacc = Signal(range(w + 9))
        orow = Signal(range(h + 1))
        obyte = Signal(range(stride + 1))
        cycles = Signal(32)
        rows, cache, record = self.rows, self.cache, self.record
        job_slot = slot_of(self.jobs.payload, self.layout.reply_window)
        job_base = Cat(Const(0, (stride - 1).bit_length()), job_slot)     # job_slot * stride
        m.d.comb += record.slot.eq(job_slot)
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.jobs.valid):
                    m.d.sync += [orow.eq(0), onacc.eq(0), oacc.eq(0), obyte.eq(PREFIX + 4)]
                    m.next = "STEP_ROWS"

            with m.State("STEP_ROWS"):
                # rows of active cells into bytes of the cache slot (after 4 bytes of cycles).
                # Exactly h rows: were the packer the slower, the array would publish the next
                # step's rows as soon as this step's last row is taken; they are the next job's.
                m.d.comb += record.busy.eq(1)
                more = orow != h
                write = onacc >= 8
                left = Mux(write, onacc - 8, onacc).as_unsigned()
                kept = Mux(write, oacc >> 8, oacc)
                m.d.comb += rows.ready.eq(more & (left <= 8))
                with m.If(write):
                    m.d.comb += [cache.addr.eq(job_base + obyte), cache.data.eq(oacc[:8]),
                                 cache.en.eq(1)]
                    m.d.sync += obyte.eq(obyte + 1)
                with m.If(rows.valid & rows.ready):
                    m.d.sync += [oacc.eq(kept | (rows.payload.active << left)),
                                 onacc.eq(left + w), orow.eq(orow + 1)]
                    with m.If(orow == 0):
                        m.d.sync += cycles.eq(rows.payload.cycles)
                with m.Elif(write):
                    m.d.sync += [oacc.eq(kept), onacc.eq(left)]
                with m.Elif(orow == h):
                    with m.If(onacc != 0):      # the last, partial byte
                        m.d.comb += [cache.addr.eq(job_base + obyte), cache.data.eq(oacc[:8]),
                                     cache.en.eq(1)]
                    m.d.sync += obyte.eq(0)
                    m.next = "STEP_CYCLES"

            with m.State("STEP_CYCLES"):
                # the slot's first bytes: the prefix, then the step's cycles (the step's
                # learning counts from the first cycle: the count's bytes follow)
                m.d.comb += record.busy.eq(1)
                with m.If(obyte == 0):
                    m.d.comb += self.state_changed.eq(record.learn)
                head = Cat(record.check, self.changes, cycles)
                m.d.comb += [cache.addr.eq(job_base + obyte), cache.en.eq(1),
                             cache.data.eq(head.word_select(obyte[:4], 8))]
                m.d.sync += obyte.eq(obyte + 1)
                with m.If(obyte == PREFIX + 3):
                    m.d.comb += [self.jobs.ready.eq(1), record.done.eq(1)]
                    m.next = "IDLE"
        return m


class ReplySender(wiring.Component):
    """Sends replies as frames on `tx`: the dispatcher's first, else the oldest packed STEP's.

    Members
        replies: In(stream.Signature(reply_layout(window)))
            a reply of the dispatcher; its payload stays as it is until `ready`, which comes
            with the frame's last byte
        steps: In(stream.Signature(8))   a STEP reply complete in the cache (its seq); taken
                                         when its sending begins
        changes: In(32)                  the count of state changes (the prefix's last bytes)
        cache: In(ReadPort.Signature(...))   the reply cache
        chunk: In(ReadPort.Signature(...))   the chunk buffer (a READ_CHUNK's words)
        tx: Out(stream.Signature(8))     the frames, a byte a cycle while taken
        idle: Out(1)                     no reply is being sent

    A reply begins the cycle after it is offered; a frame's bytes: marker, type, seq, length
    (2), payload, CRC (2).
    """

    def __init__(self, geometry: ArrayGeometry):
        layout = ProtocolLayout.for_geometry(geometry)
        self.layout = layout
        self.stride = cache_stride(layout)
        self.identify = list(ProtocolLayout.identify_payload(geometry))
        window = layout.reply_window
        super().__init__({
            "replies": In(stream.Signature(reply_layout(window))),
            "steps": In(stream.Signature(8)),
            "changes": In(32),
            "cache": In(ReadPort.Signature(addr_width=ceil_log2(window * self.stride),
                                           shape=8)),
            "chunk": In(ReadPort.Signature(addr_width=ceil_log2(layout.chunk_bytes), shape=8)),
            "tx": Out(stream.Signature(8)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        lay, stride = self.layout, self.stride
        window = lay.reply_window
        m = Module()
        m.submodules.crc = crc = CRC16_CCITT_FALSE(data_width=8).create()
        ti = Signal(16)                # byte index in the frame being sent
        stepping = Signal()            # the reply is a queued STEP's (else `replies`')
        step_seq = Signal(8)
        step_slot = Signal(range(window))
        reply = self.replies.payload
        length = Mux(stepping, lay.step_reply, reply.length)
        source = ReplySource(Signal(2))
        m.d.comb += source.eq(Mux(stepping, ReplySource.CACHE, reply.source))
        small = Array([reply.small[0], reply.small[1], reply.small[2]])

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.comb += [self.idle.eq(1), crc.start.eq(1)]
                m.d.sync += ti.eq(0)
                with m.If(self.replies.valid):
                    m.d.sync += stepping.eq(0)
                    m.next = "SEND"
                with m.Elif(self.steps.valid):
                    m.d.comb += self.steps.ready.eq(1)
                    m.d.sync += [stepping.eq(1), step_seq.eq(self.steps.payload),
                                 step_slot.eq(slot_of(self.steps.payload, window))]
                    m.next = "SEND"

            with m.State("SEND"):
                pay = ti - 5
                end = 5 + length
                advance = self.tx.ready
                nxt = Mux(advance, ti + 1, ti) - 5        # next payload index (memories)
                m.d.comb += [self.cache.addr.eq(Cat(nxt[:(stride - 1).bit_length()],
                                                    Mux(stepping, step_slot, reply.slot))),
                             self.chunk.addr.eq(nxt - PREFIX - 2)]
                # after the prefix: `small`, the chunk buffer, or IDENTIFY's bytes and status
                q = (pay - PREFIX)[:16]
                prefix = Cat(reply.check, self.changes).word_select(pay[:3], 8)
                ident = Array([Const(b, 8) for b in self.identify] + list(small))[q[:8]]
                rest = Mux(q < reply.small_len, small[q[:2]],
                           Array([small[q[:2]], self.cache.data, self.chunk.data,
                                  ident])[source.as_value()])
                payload_byte = Mux(source == ReplySource.CACHE, self.cache.data,
                                   Mux(pay < PREFIX, prefix, rest))
                byte = Signal(8)
                with m.If(ti == 0):
                    m.d.comb += byte.eq(MARKER)
                with m.Elif(ti == 1):
                    m.d.comb += byte.eq(Mux(stepping, Type.STEP | Type.REPLY, reply.type))
                with m.Elif(ti == 2):
                    m.d.comb += byte.eq(Mux(stepping, step_seq, reply.seq))
                with m.Elif(ti == 3):
                    m.d.comb += byte.eq(length[:8])
                with m.Elif(ti == 4):
                    m.d.comb += byte.eq(length[8:])
                with m.Elif(ti < end):
                    m.d.comb += byte.eq(payload_byte)
                with m.Elif(ti == end):
                    m.d.comb += byte.eq(crc.crc[:8])
                with m.Else():
                    m.d.comb += byte.eq(crc.crc[8:])
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(byte), crc.data.eq(byte)]
                with m.If(advance):
                    m.d.sync += ti.eq(ti + 1)
                    m.d.comb += crc.valid.eq((ti != 0) & (ti < end))
                    with m.If(ti == end + 1):
                        m.d.comb += self.replies.ready.eq(~stepping)
                        m.next = "IDLE"
        return m


class ExecutedRequests(wiring.Component):
    """What the dispatcher has executed: the sequence number it expects next, the check of the
    last request, and for each cached STEP reply its seq, check and learn flag.

    Members
        frame: In(frame_layout())    the frame being dispatched
        executed: In(1)              its request is executed (a STEP's: a new step is taken)
        fed: In(1), learn: In(1)     its step's input is fed, with this learn flag
        forget: In(1)                no cached reply is answered again (IDENTIFY)
        record: In(step_record_signature(window))   the packer's step: its check and learn
                                     flag; `done`: its reply is cached
        expected: Out(8)             the sequence number to execute next
        new: Out(1)                  the frame's seq is the expected one
        last: Out(1)                 it is the one before (a retry of the last request)
        cached: Out(1)               a STEP with the frame's seq ran and its reply is cached
        same_check: Out(1)           the frame's check is that of the request (the cached
                                     step, when the frame is a STEP) its seq ran as; valid
                                     from the cycle after the frame is offered while the
                                     packer is idle, until the next `executed`
    """

    def __init__(self, window: int):
        self.window = window
        super().__init__({
            "frame": In(frame_layout()),
            "executed": In(1),
            "fed": In(1),
            "learn": In(1),
            "forget": In(1),
            "record": In(step_record_signature(window)),
            "expected": Out(8),
            "new": Out(1),
            "last": Out(1),
            "cached": Out(1),
            "same_check": Out(1),
        })

    def elaborate(self, platform):
        window = self.window
        m = Module()
        # entry `window`: the last other request's check
        m.submodules.checks = checks = Memory(shape=16, depth=window + 1, init=[])
        ck_w, ck_r = checks.write_port(), checks.read_port()
        frame, record, expected = self.frame, self.record, self.expected
        cache_seq = Array(Signal(8, name=f"cache_seq_{i}") for i in range(window))
        cache_ok = Signal(window)
        cache_learn = Signal(window)   # each cached step's learn flag
        slot = slot_of(frame.seq, window)
        is_step = frame.type == MessageType.STEP
        behind = (expected - frame.seq)[:8]
        retry = (behind >= 1) & (behind <= window)
        m.d.comb += [self.new.eq(frame.seq == expected), self.last.eq(behind == 1),
                     self.cached.eq(retry & cache_ok.bit_select(slot, 1)
                                    & (cache_seq[slot] == frame.seq)),
                     self.same_check.eq(ck_r.data == frame.check)]
        with m.If(self.executed):
            m.d.sync += expected.eq(frame.seq + 1)
            m.d.comb += [ck_w.addr.eq(Mux(is_step, slot, window)), ck_w.data.eq(frame.check),
                         ck_w.en.eq(1)]
            with m.If(is_step):
                m.d.sync += [cache_ok.bit_select(slot, 1).eq(0), cache_seq[slot].eq(frame.seq)]
        with m.If(self.forget):
            m.d.sync += cache_ok.eq(0)
        with m.If(self.fed):
            m.d.sync += cache_learn.bit_select(slot, 1).eq(self.learn)
        # the packer's slot while it packs, else (when quiet too) the frame's
        m.d.comb += [ck_r.addr.eq(Mux(record.busy, record.slot, Mux(is_step, slot, window))),
                     record.check.eq(ck_r.data),
                     record.learn.eq(cache_learn.bit_select(record.slot, 1))]
        with m.If(record.done):
            m.d.sync += cache_ok.bit_select(record.slot, 1).eq(1)
        return m


class StateMover(wiring.Component):
    """Moves state words a chunk at a time: a LOAD_CHUNK's from the receiver's buffer to the
    array's `state_in`, a READ_CHUNK's from the array's `state_out` into the chunk buffer.

    Members
        begin: In(1)             a load or read-back of all the array's state words begins
        words_left: Out(...)     its words not yet moved
        start: In(1), load: In(1), words: In(...)
                                 move the next `words` words (`load`: from buffer byte 2 on,
                                 whose address must be 2 in this cycle; else to chunk buffer
                                 byte 0 on)
        addr: Out(...), byte: In(8)   the buffer's byte address, and its byte a cycle later
        done: Out(1)             the chunk's last word is moved in this cycle
        state_in: Out(...), state_out: In(...)   the array's streams
        chunk: In(WritePort.Signature(...))      the chunk buffer

    A word of `word_bytes` bytes takes `word_bytes` + 1 cycles to load and `word_bytes` to
    read, while the array is ready.
    """

    def __init__(self, layout: ProtocolLayout, state_in: wiring.Member,
                 state_out: wiring.Member):
        self.layout = layout
        super().__init__({
            "begin": In(1),
            "words_left": Out(range(layout.state_words + 1)),
            "start": In(1),
            "load": In(1),
            "words": In(range(layout.chunk_words + 1)),
            "addr": Out(range(layout.max_payload + 1)),
            "byte": In(8),
            "done": Out(1),
            "state_in": state_in,
            "state_out": state_out,
            "chunk": In(WritePort.Signature(addr_width=ceil_log2(layout.chunk_bytes), shape=8)),
        })

    def elaborate(self, platform):
        lay = self.layout
        wb = lay.word_bytes
        m = Module()
        chunk_words = Signal(range(lay.chunk_words + 1))
        idx = Signal(16)               # byte index into the buffer / the chunk buffer
        word = Signal(8 * wb)
        wbyte = Signal(range(wb + 1))
        words_left, state_in, state_out, chunk = (self.words_left, self.state_in,
                                                  self.state_out, self.chunk)

        def byte_of(value, i):
            """Byte i of a word (little-endian)."""
            return value.word_select(i[:max(1, (wb - 1).bit_length())], 8) if wb > 1 else value

        with m.If(self.begin):
            m.d.sync += words_left.eq(lay.state_words)
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [chunk_words.eq(self.words), idx.eq(Mux(self.load, 2, 0)),
                                 wbyte.eq(0)]
                    with m.If(self.load):
                        m.next = "LOAD_WORDS"
                    with m.Else():
                        m.next = "READ_WORDS"

            with m.State("LOAD_WORDS"):
                # assemble little-endian words from the buffer, offer each on state_in
                whole = wbyte == wb
                m.d.comb += [state_in.valid.eq(whole), state_in.payload.eq(word)]
                advance = ~whole
                m.d.comb += self.addr.eq(Mux(advance, idx + 1, idx))
                with m.If(advance):
                    m.d.sync += [byte_of(word, wbyte).eq(self.byte),
                                 wbyte.eq(wbyte + 1), idx.eq(idx + 1)]
                with m.If(whole & state_in.ready):
                    m.d.sync += [wbyte.eq(0), word.eq(0), chunk_words.eq(chunk_words - 1),
                                 words_left.eq(words_left - 1)]
                    with m.If(chunk_words == 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"

            with m.State("READ_WORDS"):
                # each state_out word into wb bytes of the chunk buffer
                m.d.comb += state_out.ready.eq(wbyte == wb - 1)
                with m.If(state_out.valid):
                    m.d.comb += [chunk.addr.eq(idx), chunk.en.eq(1),
                                 chunk.data.eq(byte_of(state_out.payload, wbyte))]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(wbyte == wb - 1):
                        m.d.sync += [wbyte.eq(0), chunk_words.eq(chunk_words - 1),
                                     words_left.eq(words_left - 1)]
                        with m.If(chunk_words == 1):
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += wbyte.eq(wbyte + 1)
        return m


def answer_layout() -> data.StructLayout:
    """`StateTransfer`'s answer to a request: a reply (its type, payload length after the
    prefix, source, and whether the chunk index is its first two bytes) or a refusal."""
    return data.StructLayout({"reply": 1, "refuse": 1, "error": ErrorCode, "type": 8,
                              "length": 16, "source": ReplySource, "index": 16, "indexed": 1})


class StateTransfer(wiring.Component):
    """The array's state between host and array: LOAD_BEGIN, LOAD_CHUNK, READ_BEGIN and
    READ_CHUNK, after the dispatcher's checks of their length and sequence number.

    Members
        start: In(1)            take the dispatcher's frame: a new LOAD_BEGIN or READ_BEGIN
                                (executed), or a LOAD_CHUNK or READ_CHUNK (the buffer's word
                                0 is read in this cycle)
        frame: In(frame_layout()), new: In(1), same_last: In(1), stale: In(ErrorCode)
                                the frame, whether its seq is the expected one or the last
                                request's with the same check, the error for a used seq
        word: In(16), byte: In(8), addr: Out(...)   the receiver's buffer (`StateMover`)
        executed: Out(1)        the frame's request is executed
        answer: Out(answer_layout())   valid in the cycle the request is answered
        state_changed: Out(1)   a load begins
        clear: In(1)            the array is reset: no load or read-back goes on
        loading, reading: Out(1); held_chunk: Out(16)   the status IDENTIFY reports
        command, state_in: Out(...); state_out: In(...)   the array's streams
        chunk: In(WritePort.Signature(...))             the chunk buffer
    """

    def __init__(self, layout: ProtocolLayout, array: dict):
        """`array`: the members to drive the array's `command`, `state_in` and `state_out`."""
        self.layout = layout
        super().__init__({
            "start": In(1),
            "frame": In(frame_layout()),
            "new": In(1),
            "same_last": In(1),
            "stale": In(ErrorCode, init=ErrorCode.OUT_OF_ORDER),
            "word": In(16),
            "byte": In(8),
            "addr": Out(range(layout.max_payload + 1)),
            "executed": Out(1),
            "answer": Out(answer_layout()),
            "state_changed": Out(1),
            "clear": In(1),
            "loading": Out(1),
            "reading": Out(1),
            "held_chunk": Out(16, init=0xFFFF),   # reading: the chunk in the buffer
            "command": array["command"],
            "state_in": array["state_in"],
            "state_out": array["state_out"],
            "chunk": In(WritePort.Signature(addr_width=ceil_log2(layout.chunk_bytes), shape=8)),
        })

    def elaborate(self, platform):
        lay = self.layout
        wb = lay.word_bytes
        m = Module()
        m.submodules.mover = mover = StateMover(lay, self.signature.members["state_in"],
                                                self.signature.members["state_out"])
        for name in ("state_in", "state_out", "chunk"):
            wiring.connect(m, getattr(mover, name), wiring.flipped(getattr(self, name)))
        rtype, new, answer = self.frame.type, self.new, self.answer
        loading, reading, held_chunk = self.loading, self.reading, self.held_chunk
        next_chunk = Signal(16)        # loading: the chunk expected next
        held_words = Signal(range(lay.chunk_words + 1))
        index = Signal(16)
        m.d.comb += [mover.byte.eq(self.byte), answer.index.eq(index)]
        with m.If(self.clear):
            m.d.sync += [loading.eq(0), reading.eq(0)]

        def reply(m, type_, length, source=ReplySource.SMALL, indexed=True):
            m.d.comb += [answer.reply.eq(1), answer.type.eq(type_), answer.length.eq(length),
                         answer.source.eq(source), answer.indexed.eq(indexed)]
            m.next = "IDLE"

        def refuse(m, code):
            m.d.comb += [answer.refuse.eq(1), answer.error.eq(code)]
            m.next = "IDLE"

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If((rtype == MessageType.LOAD_BEGIN)
                              | (rtype == MessageType.READ_BEGIN)):
                        m.next = "COMMAND"
                    with m.Else():
                        m.next = "CHUNK_INDEX"

            with m.State("COMMAND"):
                with m.If(rtype == MessageType.LOAD_BEGIN):
                    m.d.comb += self.command.payload.eq(Command.LOAD_STATE)
                with m.Else():
                    m.d.comb += self.command.payload.eq(Command.READ_STATE)
                m.d.comb += self.command.valid.eq(1)
                with m.If(self.command.ready):
                    m.d.comb += mover.begin.eq(1)
                    m.d.sync += [next_chunk.eq(0), held_chunk.eq(0xFFFF)]
                    with m.If(rtype == MessageType.LOAD_BEGIN):
                        m.d.comb += self.state_changed.eq(1)
                        m.d.sync += loading.eq(1)
                    with m.Else():
                        m.d.sync += reading.eq(1)
                    reply(m, rtype.as_value() | Type.REPLY, 0, indexed=False)

            with m.State("CHUNK_INDEX"):
                # the chunk index: the buffer's first word (registered before it is compared:
                # the memory's read is a long path on a board)
                m.d.sync += index.eq(self.word)
                m.next = "CHUNK_CHECK"

            with m.State("CHUNK_CHECK"):
                size = Mux(mover.words_left < lay.chunk_words, mover.words_left,
                           lay.chunk_words)
                m.d.comb += mover.words.eq(size)
                with m.If(rtype == MessageType.READ_CHUNK):
                    # the held chunk again, or the next one from the array
                    with m.If(index == held_chunk):
                        m.d.comb += self.executed.eq(new)
                        reply(m, Type.READ_CHUNK | Type.REPLY, 2 + held_words * wb,
                              ReplySource.CHUNK)
                    with m.Elif(~new | ~reading | (index != (held_chunk + 1)[:16])):
                        refuse(m, ErrorCode.BAD_STATE)
                    with m.Else():
                        m.d.comb += [self.executed.eq(1), mover.start.eq(1)]
                        m.d.sync += [held_words.eq(size), held_chunk.eq(index)]
                        m.next = "MOVE"
                with m.Elif(~new & self.same_last & (index == next_chunk - 1)):
                    reply(m, Type.LOAD_CHUNK | Type.REPLY, 2)
                with m.Elif(~new):
                    refuse(m, self.stale)
                with m.Elif(~loading | (index != next_chunk)):
                    refuse(m, ErrorCode.BAD_STATE)
                with m.Elif(self.frame.length != 2 + size * wb):
                    refuse(m, ErrorCode.BAD_LENGTH)
                with m.Else():
                    m.d.comb += [self.executed.eq(1), mover.start.eq(1), mover.load.eq(1),
                                 self.addr.eq(2)]
                    m.next = "MOVE"

            with m.State("MOVE"):
                m.d.comb += self.addr.eq(mover.addr)
                with m.If(mover.done & loading):
                    m.d.sync += [next_chunk.eq(next_chunk + 1),
                                 loading.eq(mover.words_left != 1)]
                    reply(m, Type.LOAD_CHUNK | Type.REPLY, 2)
                with m.Elif(mover.done):
                    m.d.sync += reading.eq(mover.words_left != 1)
                    reply(m, Type.READ_CHUNK | Type.REPLY, 2 + held_words * wb,
                          ReplySource.CHUNK)
        return m


class RequestDispatcher(wiring.Component):
    """Executes the requests of `frames` in order, and offers each reply but a new STEP's on
    `replies`.

    A new STEP is taken at once while there is `room` in the queue (the receiver goes on to
    the next frame once its input is fed); any other request, and a refused frame's error,
    waits until all is `quiet` (no step in flight, no reply being packed or sent), so that a
    retry finds its step's reply in the cache and every reply counts the changes before it.
    The frame is taken (`frames.ready`) once its step is fed, or the cycle after its reply is
    sent. A request's reply is offered from the cycle after it is executed or refused.
    Its parts: `ExecutedRequests` (the order of requests and their retries), `InputFeeder` (a
    STEP's input to the array), `StateTransfer` (loads and read-backs of the array's state).

    Members
        frames: In(stream.Signature(frame_layout()))   the receiver's checked frames
        buffer: Out(buffer_signature(...))             their payloads
        quiet: In(1), room: In(1)                      see above (`StepQueue.room`)
        steps: Out(stream.Signature(8))   a new STEP fed to the array (its seq)
        record: In(step_record_signature(window))   the packer's step: its check and learn flag
        replies: Out(stream.Signature(reply_layout(window)))   the reply to send
        inputs, command, state_in: Out(...); state_out: In(...)   the array's streams
        array_reset: Out(1)               reset the array (RESET)
        chunk: In(WritePort.Signature(...))   the chunk buffer, filled by READ_CHUNK
        state_changed: Out(1)             a load begins or the array is reset
    """

    def __init__(self, geometry: ArrayGeometry, array: wiring.Signature):
        """`array`: the cell array's signature (the streams to drive are its members')."""
        self.geometry = geometry
        self.layout = layout = ProtocolLayout.for_geometry(geometry)
        self.identify = ProtocolLayout.identify_payload(geometry)
        window = layout.reply_window
        members = array.members
        super().__init__({
            "frames": In(stream.Signature(frame_layout())),
            "buffer": Out(buffer_signature(layout.max_payload)),
            "quiet": In(1),
            "room": In(1),
            "steps": Out(stream.Signature(8)),
            "record": In(step_record_signature(window)),
            "replies": Out(stream.Signature(reply_layout(window))),
            "inputs": members["inputs"].flip(),
            "command": members["command"].flip(),
            "state_in": members["state_in"].flip(),
            "state_out": members["state_out"].flip(),
            "array_reset": Out(1),
            "chunk": In(WritePort.Signature(addr_width=ceil_log2(layout.chunk_bytes), shape=8)),
            "state_changed": Out(1),
        })

    def elaborate(self, platform):
        g, lay = self.geometry, self.layout
        window = lay.reply_window
        m = Module()
        m.submodules.feeder = feeder = InputFeeder(g, self.inputs.signature)
        m.submodules.transfer = transfer = StateTransfer(lay, self.signature.members)
        m.submodules.requests = requests = ExecutedRequests(window)
        wiring.connect(m, feeder.inputs, wiring.flipped(self.inputs))
        for name in ("command", "state_in", "state_out", "chunk"):
            wiring.connect(m, getattr(transfer, name), wiring.flipped(getattr(self, name)))
        wiring.connect(m, wiring.flipped(self.record), requests.record)
        frame, answer = self.frames.payload, transfer.answer
        rtype, rseq, rlen, crc = frame.type, frame.seq, frame.length, frame.check
        new, expected = requests.new, requests.expected
        same_last = requests.last & requests.same_check
        taken = Mux(requests.last, ErrorCode.CONFLICT, ErrorCode.OUT_OF_ORDER)   # a stale seq
        loading, reading, held_chunk = transfer.loading, transfer.reading, transfer.held_chunk
        m.d.comb += [requests.frame.eq(frame), transfer.frame.eq(frame), transfer.new.eq(new),
                     transfer.same_last.eq(same_last), transfer.stale.eq(taken),
                     self.state_changed.eq(transfer.state_changed)]
        reply_out = Signal(reply_layout(window))
        m.d.comb += self.replies.payload.eq(reply_out)

        def reply(m, type_, length, source=ReplySource.SMALL, smalls=(), small_len=None,
                  seq=rseq, anon=False):
            """Offer a reply (only when quiet, so it counts every change)."""
            set_reply(m, reply_out, type_, seq, length, 0 if anon else crc, source, smalls,
                      len(smalls) if small_len is None else small_len)
            m.next = "REPLY"

        def error(m, code):
            """The request is refused: nothing of it was executed."""
            reply(m, Type.ERROR, 3, smalls=(code, expected, rtype))

        def executed(m):
            """The request is executed: the next sequence number is expected, and a retry of
            this request (the same check) is answered from then on."""
            m.d.comb += requests.executed.eq(1)

        buffer = self.buffer
        m.d.comb += [feeder.word.eq(buffer.word), transfer.word.eq(buffer.word),
                     transfer.byte.eq(buffer.byte)]

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                # A new step goes to the array at once (its reply follows those in flight); any
                # other request waits until the replies before it are out (it may reply at once,
                # and a retry must find its step's reply in the cache).
                step_now = ((rtype == MessageType.STEP) & (rlen == lay.step_request) & new
                            & ~loading & ~reading & self.room)
                with m.If(self.frames.valid & frame.refused):
                    with m.If(self.quiet):
                        reply(m, Type.ERROR, 3,
                              smalls=(frame.error, expected, MessageType.NONE), seq=0, anon=True)
                with m.Elif(self.frames.valid & (self.quiet | step_now)):
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.Switch(rtype):
                    with m.Case(MessageType.IDENTIFY):
                        with m.If(rlen != 0):
                            error(m, ErrorCode.BAD_LENGTH)
                        with m.Else():
                            executed(m)
                            m.d.comb += requests.forget.eq(1)
                            reply(m, Type.IDENTIFY | Type.REPLY, len(self.identify) + 3,
                                  ReplySource.IDENTIFY,
                                  (Cat(loading, reading), held_chunk[:8], held_chunk[8:]),
                                  small_len=0)
                    with m.Case(MessageType.STEP):
                        with m.If(rlen != lay.step_request):
                            error(m, ErrorCode.BAD_LENGTH)
                        with m.Elif(new & (loading | reading)):
                            error(m, ErrorCode.BAD_STATE)
                        with m.Elif(new):
                            executed(m)
                            m.d.comb += [buffer.addr.eq(0), feeder.start.eq(1)]
                            m.next = "FEED"
                        with m.Elif(requests.cached):
                            # the step that ran with this seq: this one, or another's
                            with m.If(requests.same_check):
                                m.d.sync += reply_out.slot.eq(slot_of(rseq, window))
                                reply(m, Type.STEP | Type.REPLY, lay.step_reply,
                                      ReplySource.CACHE)
                            with m.Else():
                                error(m, ErrorCode.CONFLICT)
                        with m.Else():
                            error(m, ErrorCode.OUT_OF_ORDER)
                    with m.Case(MessageType.LOAD_BEGIN, MessageType.READ_BEGIN,
                                MessageType.RESET):
                        with m.If(rlen != 0):
                            error(m, ErrorCode.BAD_LENGTH)
                        with m.Elif(~new & same_last):
                            reply(m, rtype.as_value() | Type.REPLY, 0)
                        with m.Elif(~new):
                            error(m, taken)
                        with m.Elif(rtype == MessageType.RESET):
                            m.d.comb += [self.array_reset.eq(1), self.state_changed.eq(1),
                                         transfer.clear.eq(1)]
                            executed(m)
                            reply(m, Type.RESET | Type.REPLY, 0)
                        with m.Elif(loading | reading):
                            error(m, ErrorCode.BAD_STATE)
                        with m.Else():
                            executed(m)
                            m.d.comb += transfer.start.eq(1)
                            m.next = "TRANSFER"
                    with m.Case(MessageType.LOAD_CHUNK, MessageType.READ_CHUNK):
                        with m.If((rtype == MessageType.READ_CHUNK) & (rlen != 2)):
                            error(m, ErrorCode.BAD_LENGTH)
                        with m.Elif((rtype == MessageType.READ_CHUNK) & ~new & ~same_last):
                            error(m, taken)
                        with m.Else():
                            m.d.comb += [buffer.addr.eq(0), transfer.start.eq(1)]
                            m.next = "TRANSFER"
                    with m.Default():
                        error(m, ErrorCode.UNKNOWN_TYPE)

            with m.State("FEED"):
                # in flight: the packer and the sender reply; on to the next frame
                m.d.comb += [buffer.addr.eq(feeder.addr), requests.learn.eq(feeder.learn)]
                with m.If(feeder.done):
                    m.d.comb += [requests.fed.eq(1), self.steps.valid.eq(1),
                                 self.steps.payload.eq(rseq), self.frames.ready.eq(1)]
                    m.next = "IDLE"

            with m.State("TRANSFER"):
                m.d.comb += [buffer.addr.eq(transfer.addr), requests.executed.eq(transfer.executed)]
                with m.If(answer.refuse):
                    error(m, answer.error)
                with m.Elif(answer.reply):
                    reply(m, answer.type, answer.length, answer.source,
                          (answer.index[:8], answer.index[8:]), Mux(answer.indexed, 2, 0))

            with m.State("REPLY"):
                m.d.comb += self.replies.valid.eq(1)
                with m.If(self.replies.ready):
                    m.next = "RELEASE"

            with m.State("RELEASE"):
                m.d.comb += self.frames.ready.eq(1)
                m.next = "IDLE"
        return m


class ProtocolEngine(wiring.Component):
    """Protocol engine and cell array (`geometry`), behind two byte streams.

    Cycle budget of a STEP: frame in (1 byte a cycle when offered), the input fed to the array
    (one beat of `input_width` bits a cycle or so), the array's step, its rows packed into the
    reply, the reply out (1 byte a cycle when taken). With STEPs in flight, all but the array's
    step overlaps the steps before. `rx` is not ready while a request waits its turn or is
    executed, so a link without flow control (a UART) needs a FIFO in front.
    """

    def __init__(self, geometry: ArrayGeometry, timeout: int = 1 << 16,
                 array: CellArray | None = None):
        """`array`: the cell array to drive (for Verilog export, one built with `pe_modules`)."""
        self.geometry = geometry
        self.layout = ProtocolLayout.for_geometry(geometry)
        self.timeout = timeout
        self.array = CellArray(geometry) if array is None else array
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        g, lay, array = self.geometry, self.layout, self.array
        window = lay.reply_window
        m = Module()
        m.submodules.receiver = receiver = FrameReceiver(lay, self.timeout)
        m.submodules.dispatcher = dispatcher = RequestDispatcher(g, array.signature)
        m.submodules.queue = queue = StepQueue(window)
        m.submodules.packer = packer = StepPacker(g, array.signature.members["outputs"].flip())
        m.submodules.sender = sender = ReplySender(g)
        m.submodules.array = ResetInserter(dispatcher.array_reset)(array)
        m.submodules.cache = cache = Memory(shape=8, depth=window * cache_stride(lay), init=[])
        m.submodules.chunk = chunk = Memory(shape=8, depth=lay.chunk_bytes, init=[])

        wiring.connect(m, wiring.flipped(self.rx), receiver.rx)
        wiring.connect(m, receiver.frames, dispatcher.frames)
        wiring.connect(m, receiver.buffer, dispatcher.buffer)
        for name in ("inputs", "command", "state_in", "state_out"):
            wiring.connect(m, getattr(dispatcher, name), getattr(array, name))
        wiring.connect(m, dispatcher.steps, queue.push)
        wiring.connect(m, queue.packing, packer.jobs)
        wiring.connect(m, array.outputs, packer.rows)
        wiring.connect(m, packer.record, dispatcher.record)
        wiring.connect(m, cache.write_port(), packer.cache)
        wiring.connect(m, chunk.write_port(), dispatcher.chunk)
        wiring.connect(m, dispatcher.replies, sender.replies)
        wiring.connect(m, queue.sending, sender.steps)
        wiring.connect(m, cache.read_port(), sender.cache)
        wiring.connect(m, chunk.read_port(), sender.chunk)
        wiring.connect(m, sender.tx, wiring.flipped(self.tx))
        m.d.comb += [dispatcher.quiet.eq(sender.idle & ~packer.record.busy & queue.empty),
                     dispatcher.room.eq(queue.room)]

        # state changes: learning steps applied, loads begun, resets (every reply carries it,
        # so a host sees any change of the array's state it did not ask for)
        changes = Signal(32)
        m.d.sync += changes.eq(changes + (dispatcher.state_changed | packer.state_changed))
        m.d.comb += [packer.changes.eq(changes), sender.changes.eq(changes)]
        return m
