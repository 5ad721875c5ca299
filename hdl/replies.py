"""The protocol engine's reply side: the steps in flight, their packing and the replies out.

`StepQueue` (the STEPs in flight, to pack and to send), `StepPacker` (a step's rows into the
reply cache) and `ReplySender` (each reply's frame onto `tx`); see `hdl/protocol.py`.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.crc.catalog import CRC16_CCITT_FALSE
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import MARKER, PREFIX, ProtocolLayout, Type

from .frames import ReplySource, cache_stride, reply_layout, slot_of, step_record_signature

__all__ = ["StepQueue", "StepPacker", "ReplySender"]


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
