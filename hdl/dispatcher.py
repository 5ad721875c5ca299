"""The protocol engine's dispatcher: executes the received requests in order.

`RequestDispatcher` and its parts: `ExecutedRequests` (the order of requests and their
retries), `InputFeeder` (a STEP's input to the array) and `StateTransfer` (with `StateMover`:
loads and read-backs of the array's state). How it is joined to the other parts:
`hdl/protocol.py`.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import ProtocolLayout, Type

from .array import Command
from .frames import (ErrorCode, MessageType, ReplySource, answer_layout, buffer_signature,
                     frame_layout, reply_layout, set_reply, slot_of, step_entry_layout,
                     step_record_signature)

__all__ = ["InputFeeder", "ExecutedRequests", "StateMover", "StateTransfer", "RequestDispatcher"]


class InputFeeder(wiring.Component):
    """Feeds one input of a STEP or BATCH request's payload (in the receiver's buffer) to the
    array's `inputs`.

    Members
        start: In(1)       feed the input whose first byte is at `base`; `addr` (`base` while
                           idle) is the buffer's address in this cycle
        base: In(...)      the byte address of the input's first byte (1: the payload's
                           first input, after the flags byte, which is then read too)
        addr: Out(...)     the byte address of the buffer word to read next
        word: In(16)       the buffer word at the address of the cycle before
        inputs: Out(stream.Signature(...))   beats of `input_width` bits and the learn flag
        learn: Out(1)      the request's learn flag, from the cycle after a `start` at base 1
        restart: Out(1)    its restart flag (`Flags.RESTART`), likewise
        done: Out(1)       the last beat is taken in this cycle

    A beat of up to 16 bits leaves every cycle the array takes it.
    """

    def __init__(self, geometry: ArrayGeometry, inputs: wiring.Signature):
        self.geometry = geometry
        layout = ProtocolLayout.for_geometry(geometry)
        self.input_bytes = layout.input_bytes
        super().__init__({
            "start": In(1),
            "base": In(range(layout.max_payload + 1)),
            "addr": Out(range(layout.max_payload + 1)),
            "word": In(16),
            "inputs": Out(inputs),
            "learn": Out(1),
            "restart": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        g = self.geometry
        iw = g.input_width
        m = Module()
        acc = Signal(iw + 16)          # input bits from buffer words, taken `iw` at a time
        nacc = Signal(range(iw + 17))
        idx = Signal(16)               # byte index into the buffer
        base = Signal.like(self.base)  # the input's first byte
        end = Signal(16)               # the byte after its last
        beat = Signal(range(g.beats_per_input + 1))
        inputs, word = self.inputs, self.word
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.comb += self.addr.eq(self.base)
                with m.If(self.start):
                    m.d.sync += [base.eq(self.base), end.eq(self.base + self.input_bytes),
                                 beat.eq(0)]
                    m.next = "FIRST"

            with m.State("FIRST"):
                # the buffer word holding the input's first byte (its odd byte when `base` is
                # odd, the even one the flags when `base` is 1)
                first = Cat(Const(0, 1), base[1:]) + 2
                with m.If(base[0]):
                    m.d.sync += [acc.eq(word[8:]), nacc.eq(8)]
                with m.Else():
                    m.d.sync += [acc.eq(word), nacc.eq(16)]
                with m.If(base == 1):
                    m.d.sync += [self.learn.eq(word[0]), self.restart.eq(word[1])]
                m.d.sync += idx.eq(first)
                m.d.comb += self.addr.eq(first)
                m.next = "FEED"

            with m.State("FEED"):
                # `word` holds buffer bytes idx and idx + 1 (idx even); top up the accumulator
                # with both, offer full beats (a word is taken in the same cycle as a beat
                # leaves: a cycle a beat of up to 16 bits). Past the input's last byte the
                # word's other byte is counted but never offered: the beats end before it.
                m.d.comb += [inputs.payload.bits.eq(acc[:iw]),
                             inputs.payload.learn.eq(self.learn),
                             inputs.valid.eq(nacc >= iw)]
                taken = inputs.valid & inputs.ready
                shifted = Mux(taken, acc >> iw, acc)
                left = Signal.like(nacc)
                m.d.comb += left.eq(Mux(taken, nacc - iw, nacc))
                take = (left < iw) & (idx < end)
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
        cached: Out(1)               a STEP or BATCH with the frame's seq ran and its reply is
                                     cached
        same_check: Out(1)           the frame's check is that of the request (the cached
                                     step, when the frame is a STEP) its seq ran as; valid
                                     from the cycle after the frame is offered while the
                                     packer is idle, until the next `executed`
    """

    def __init__(self, window: int):
        """`window`: the STEP and BATCH replies cached."""
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
        is_step = (frame.type == MessageType.STEP) | (frame.type == MessageType.BATCH)
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
    """Executes the requests of `frames` in order, and offers each reply but a new STEP's or
    BATCH's on `replies`.

    A new STEP or BATCH is taken at once while there is `room` in the queue (the receiver goes
    on to the next frame once its inputs are fed, a BATCH's one after another); any other
    request, and a refused frame's error,
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
        steps: Out(stream.Signature(9))   a new STEP or BATCH fed to the array: its seq, and
                                          (bit 8) whether it is a BATCH
        entries: Out(stream.Signature(step_entry_layout()))   every step fed to the array, in
                                          order; a STEP or BATCH is taken only while `ready`
        record: In(step_record_signature(window))   the packer's step: its check and learn flag
        replies: Out(stream.Signature(reply_layout(window)))   the reply to send
        inputs, command, state_in: Out(...); state_out: In(...)   the array's streams
        array_reset: Out(1)               reset the array (RESET)
        chunk: In(WritePort.Signature(...))   the chunk buffer, filled by READ_CHUNK
        state_changed: Out(1)             a load begins or the array is reset
    """

    def __init__(self, geometry: ArrayGeometry, array: wiring.Signature, batching: bool = True):
        """`array`: the cell array's signature (the streams to drive are its members');
        `batching`: BATCH requests are executed (else refused as an unknown type)."""
        self.geometry = geometry
        self.layout = layout = ProtocolLayout.for_geometry(geometry, batching)
        self.identify = ProtocolLayout.identify_payload(geometry)
        window = layout.reply_window
        members = array.members
        super().__init__({
            "frames": In(stream.Signature(frame_layout())),
            "buffer": Out(buffer_signature(layout.max_payload)),
            "quiet": In(1),
            "room": In(1),
            "steps": Out(stream.Signature(9)),
            "entries": Out(stream.Signature(step_entry_layout())),
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
        # a BATCH: its length is that of 1 to `batch_steps` inputs; `base`: the byte address
        # of the input being fed
        is_batch = rtype == MessageType.BATCH
        batch_length = Signal()
        m.d.comb += batch_length.eq(0)
        for k in range(1, lay.batch_steps + 1):
            with m.If(rlen == lay.batch_request(k)):
                m.d.comb += batch_length.eq(1)
        base = Signal(range(lay.max_payload + 1))

        def answer_step(m, reply_type, reply_length):
            """A STEP or BATCH of the right length: a new one is fed to the array (its first
            input), a retry of one that ran is answered from the reply cache."""
            with m.If(new & (loading | reading)):
                error(m, ErrorCode.BAD_STATE)
            with m.Elif(new):
                executed(m)
                m.d.comb += [feeder.base.eq(1), buffer.addr.eq(feeder.addr),
                             feeder.start.eq(1)]
                m.d.sync += base.eq(1)
                m.next = "FEED"
            with m.Elif(requests.cached):
                # the step that ran with this seq: this one, or another's
                with m.If(requests.same_check):
                    m.d.sync += reply_out.slot.eq(slot_of(rseq, window))
                    reply(m, reply_type, reply_length, ReplySource.CACHE)
                with m.Else():
                    error(m, ErrorCode.CONFLICT)
            with m.Else():
                error(m, ErrorCode.OUT_OF_ORDER)

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                # A new step goes to the array at once (its reply follows those in flight); any
                # other request waits until the replies before it are out (it may reply at once,
                # and a retry must find its step's reply in the cache).
                step_now = ((((rtype == MessageType.STEP) & (rlen == lay.step_request))
                             | (is_batch & batch_length)) & new
                            & ~loading & ~reading & self.room & self.entries.ready)
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
                            reply(m, Type.IDENTIFY | Type.REPLY, len(self.identify) + 4,
                                  ReplySource.IDENTIFY,
                                  (Cat(loading, reading), held_chunk[:8], held_chunk[8:]),
                                  small_len=0)
                    with m.Case(MessageType.STEP):
                        with m.If(rlen != lay.step_request):
                            error(m, ErrorCode.BAD_LENGTH)
                        with m.Else():
                            answer_step(m, Type.STEP | Type.REPLY, lay.step_reply)
                    if lay.batch_steps:
                        with m.Case(MessageType.BATCH):
                            with m.If(~batch_length):
                                error(m, ErrorCode.BAD_LENGTH)
                            with m.Else():
                                answer_step(m, Type.BATCH | Type.REPLY, lay.batch_reply)
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
                # in flight: the packer and the sender reply; after a STEP's input or a
                # BATCH's last, on to the next frame
                m.d.comb += [buffer.addr.eq(feeder.addr), requests.learn.eq(feeder.learn)]
                last = ~is_batch | (base + lay.input_bytes >= rlen)
                entry = self.entries.payload
                with m.If(feeder.done):
                    m.d.comb += [self.entries.valid.eq(1), entry.quiet.eq(~last),
                                 entry.learn.eq(feeder.learn),
                                 entry.restart.eq(is_batch & feeder.restart & (base == 1))]
                    with m.If(last):
                        m.d.comb += [requests.fed.eq(1), self.steps.valid.eq(1),
                                     self.steps.payload.eq(Cat(rseq, is_batch)),
                                     self.frames.ready.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += base.eq(base + lay.input_bytes)
                        m.next = "NEXT_INPUT"

            with m.State("NEXT_INPUT"):
                # a BATCH's next input, once the step before it has its entry
                m.d.comb += [feeder.base.eq(base), buffer.addr.eq(feeder.addr)]
                with m.If(self.entries.ready):
                    m.d.comb += feeder.start.eq(1)
                    m.next = "FEED"

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
