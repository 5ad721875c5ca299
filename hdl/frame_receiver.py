"""The protocol engine's receiver: bytes in, whole checked frames out (see `hdl/protocol.py`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.crc.catalog import CRC16_CCITT_FALSE
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.wire import MARKER, ProtocolLayout

from .frames import ErrorCode, buffer_signature, frame_layout

__all__ = ["FrameReceiver"]


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
