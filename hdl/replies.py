"""The protocol engine's reply side: the steps in flight, their packing and the replies out.

`StepQueue` (the STEPs in flight, to pack and to send), `StepPacker` (a step's rows into the
reply cache) and `ReplySender` (each reply's frame onto `tx`); see `hdl/protocol.py`.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.crc.catalog import CRC16_CCITT_FALSE, CRC32_ISO_HDLC
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import MARKER, PREFIX, ProtocolLayout, Type

from .frames import (ReplySource, cache_stride, reply_layout, slot_of, step_entry_layout,
                     step_record_signature)

__all__ = ["StepQueue", "StepPacker", "ReplySender"]


class StepQueue(wiring.Component):
    """The STEPs and BATCHes in flight: fed to the array, their replies not yet sent, in order.

    Their sequence numbers run on from the oldest (the dispatcher takes only new STEPs and
    BATCHes while any is in flight), so two counts and the oldest number describe the queue;
    every payload is a seq and (bit 8) whether that request is a BATCH.

    Members
        push: In(stream.Signature(9))      a request fed to the array; always ready
        packing: Out(stream.Signature(9))  the oldest whose reply is not yet in the cache;
                                           `ready`: it is now
        sending: Out(stream.Signature(9))  the oldest whose reply is in the cache but not
                                           sent; `ready`: its sending begins
        empty: Out(1)                      no step in flight
        room: Out(1)                       one more step keeps the cache slots of all apart
    """

    def __init__(self, window: int):
        """`window`: the replies the cache keeps (a power of two)."""
        self.window = window
        super().__init__({
            "push": In(stream.Signature(9)),
            "packing": Out(stream.Signature(9)),
            "sending": Out(stream.Signature(9)),
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
        batches = Signal(self.window)          # by cache slot: the request is a BATCH
        send_seq = (job_seq - unsent)[:8]
        pushed = self.push.valid
        packed = self.packing.valid & self.packing.ready
        taken = self.sending.valid & self.sending.ready
        with m.If(pushed):
            m.d.sync += batches.bit_select(slot_of(self.push.payload[:8], self.window), 1).eq(
                self.push.payload[8])
        m.d.comb += [self.push.ready.eq(1),
                     self.packing.valid.eq(jobs != 0),
                     self.packing.payload.eq(
                         Cat(job_seq, batches.bit_select(slot_of(job_seq, self.window), 1))),
                     self.sending.valid.eq(unsent != 0),
                     self.sending.payload.eq(
                         Cat(send_seq, batches.bit_select(slot_of(send_seq, self.window), 1))),
                     self.empty.eq((jobs == 0) & (unsent == 0)),
                     self.room.eq(jobs + unsent < self.window - 1)]
        m.d.sync += [jobs.eq(jobs + pushed - packed), unsent.eq(unsent + packed - taken)]
        with m.If(packed):
            m.d.sync += job_seq.eq(job_seq + 1)
        with m.Elif(pushed & (jobs == 0)):
            m.d.sync += job_seq.eq(self.push.payload[:8])
        return m


class StepPacker(wiring.Component):
    """Packs the array's rows of each step, in order: a STEP's into its slot of the reply
    cache, a BATCH's into the running check; a BATCH's reply after its last step.

    Members
        entries: In(stream.Signature(step_entry_layout()))   the next step the array steps;
                                         taken when it is packed
        jobs: In(stream.Signature(9))    the oldest STEP or BATCH in flight (its seq, and bit
                                         8: a BATCH), whose reply follows its step's, or its
                                         last step's, rows (an entry that is not quiet); taken
                                         when its reply is complete in the cache
        rows: In(stream.Signature(...))  the array's `outputs`: exactly h rows a step
        cache: In(WritePort.Signature(...))   the reply cache
        record: Out(step_record_signature(window))   the step's check and learn flag
        changes: In(32)                  the count of state changes
        state_changed: Out(1)            the step's learning counts as a change (in the cycle
                                         its reply's prefix begins)

    A slot holds the reply's whole payload: the prefix (the request's check, the state changes
    with this step's learning), then a STEP's cycles (u32) and active cells, or a BATCH's count
    of steps and running check (u32 each) since a BATCH with `Flags.RESTART`. A row of up to 16
    cells takes 2 cycles (a byte out and a row in may share one), a STEP's prefix and cycles
    10, a BATCH's reply 14. The running check is `cellsp.sim.wire.maps_check`: CRC-32 over the
    maps' bytes as a STEP reply packs them.
    """

    def __init__(self, geometry: ArrayGeometry, rows: wiring.Member, batching: bool = True):
        """`rows`: the array's `outputs` member, flipped; `batching`: BATCH steps are packed."""
        self.geometry = geometry
        self.layout = layout = ProtocolLayout.for_geometry(geometry, batching)
        self.stride = cache_stride(layout)
        window = layout.reply_window
        super().__init__({
            "entries": In(stream.Signature(step_entry_layout())),
            "jobs": In(stream.Signature(9)),
            "rows": rows,
            "cache": In(WritePort.Signature(addr_width=ceil_log2(window * self.stride),
                                            shape=8)),
            "record": Out(step_record_signature(window)),
            "changes": In(32),
            "state_changed": Out(1),
        })

    def elaborate(self, platform):
        h, w = self.geometry.config.cell_shape
        stride, batching = self.stride, bool(self.layout.batch_steps)
        m = Module()
        oacc = Signal(w + 8)
        onacc = Signal(range(w + 9))
        orow = Signal(range(h + 1))
        obyte = Signal(range(stride + 1))
        cycles = Signal(32)
        rows, cache, record = self.rows, self.cache, self.record
        job_slot = slot_of(self.jobs.payload[:8], self.layout.reply_window)
        job_base = Cat(Const(0, (stride - 1).bit_length()), job_slot)     # job_slot * stride
        entry = self.entries.payload
        checked = Signal()         # the step's map goes into the running check
        if batching:
            m.submodules.check = check = CRC32_ISO_HDLC(data_width=8).create()
            steps = Signal(32)     # steps in the running check
        m.d.comb += record.slot.eq(job_slot)

        def pack(m, byte):
            """A byte of the step's map: into the cache slot, or the running check."""
            if batching:
                m.d.comb += [check.data.eq(byte), check.valid.eq(checked)]
            m.d.comb += [cache.addr.eq(job_base + obyte), cache.data.eq(byte),
                         cache.en.eq(~checked)]

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.entries.valid & (entry.quiet | self.jobs.valid)):
                    m.d.sync += [orow.eq(0), onacc.eq(0), oacc.eq(0), obyte.eq(PREFIX + 4)]
                    if batching:
                        m.d.sync += checked.eq(entry.quiet | self.jobs.payload[8])
                        with m.If(entry.restart):
                            m.d.comb += check.start.eq(1)
                            m.d.sync += steps.eq(0)
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
                    pack(m, oacc[:8])
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
                        pack(m, oacc[:8])
                    m.d.sync += obyte.eq(0)
                    if batching:
                        with m.If(checked):
                            # a BATCH's step: counted (and its learning); after its last, the
                            # BATCH's reply
                            m.d.comb += self.state_changed.eq(entry.learn)
                            m.d.sync += steps.eq(steps + 1)
                            with m.If(entry.quiet):
                                m.d.comb += self.entries.ready.eq(1)
                                m.next = "IDLE"
                            with m.Else():
                                m.next = "BATCH_REPLY"
                        with m.Else():
                            m.next = "STEP_CYCLES"
                    else:
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
                    m.d.comb += [self.jobs.ready.eq(1), record.done.eq(1),
                                 self.entries.ready.eq(1)]
                    m.next = "IDLE"

            if batching:
                with m.State("BATCH_REPLY"):
                    # the slot: the prefix, the count of steps and the running check
                    m.d.comb += record.busy.eq(1)
                    head = Cat(record.check, self.changes, steps, check.crc)
                    m.d.comb += [cache.addr.eq(job_base + obyte), cache.en.eq(1),
                                 cache.data.eq(head.word_select(obyte[:4], 8))]
                    m.d.sync += obyte.eq(obyte + 1)
                    with m.If(obyte == self.layout.batch_reply - 1):
                        m.d.comb += [self.jobs.ready.eq(1), record.done.eq(1),
                                     self.entries.ready.eq(1)]
                        m.next = "IDLE"
        return m


class ReplySender(wiring.Component):
    """Sends replies as frames on `tx`: the dispatcher's first, else the oldest packed STEP's.

    Members
        replies: In(stream.Signature(reply_layout(window)))
            a reply of the dispatcher; its payload stays as it is until `ready`, which comes
            with the frame's last byte
        steps: In(stream.Signature(9))   a STEP or BATCH reply complete in the cache (its
                                         seq; bit 8: a BATCH's); taken when its sending begins
        changes: In(32)                  the count of state changes (the prefix's last bytes)
        cache: In(ReadPort.Signature(...))   the reply cache
        chunk: In(ReadPort.Signature(...))   the chunk buffer (a READ_CHUNK's words)
        tx: Out(stream.Signature(8))     the frames, a byte a cycle while taken
        idle: Out(1)                     no reply is being sent

    A reply begins the cycle after it is offered; a frame's bytes: marker, type, seq, length
    (2), payload, CRC (2).
    """

    def __init__(self, geometry: ArrayGeometry, batching: bool = True):
        """`batching`: IDENTIFY reports BATCH requests as executed."""
        layout = ProtocolLayout.for_geometry(geometry, batching)
        self.layout = layout
        self.stride = cache_stride(layout)
        self.identify = list(ProtocolLayout.identify_payload(geometry))
        window = layout.reply_window
        super().__init__({
            "replies": In(stream.Signature(reply_layout(window))),
            "steps": In(stream.Signature(9)),
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
        step_batch = Signal()          # the queued reply is a BATCH's
        step_slot = Signal(range(window))
        reply = self.replies.payload
        length = Mux(stepping, Mux(step_batch, lay.batch_reply, lay.step_reply), reply.length)
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
                    m.d.sync += [stepping.eq(1), step_seq.eq(self.steps.payload[:8]),
                                 step_batch.eq(self.steps.payload[8]),
                                 step_slot.eq(slot_of(self.steps.payload[:8], window))]
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
                ident = Array([Const(b, 8) for b in self.identify] + list(small)
                              + [Const(lay.batch_steps, 8)])[q[:8]]
                rest = Mux(q < reply.small_len, small[q[:2]],
                           Array([small[q[:2]], self.cache.data, self.chunk.data,
                                  ident])[source.as_value()])
                payload_byte = Mux(source == ReplySource.CACHE, self.cache.data,
                                   Mux(pay < PREFIX, prefix, rest))
                byte = Signal(8)
                with m.If(ti == 0):
                    m.d.comb += byte.eq(MARKER)
                with m.Elif(ti == 1):
                    m.d.comb += byte.eq(Mux(stepping, Mux(step_batch, Type.BATCH | Type.REPLY,
                                                          Type.STEP | Type.REPLY), reply.type))
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
