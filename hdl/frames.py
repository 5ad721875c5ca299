"""What the protocol engine's parts share: the message enums, layouts and small helpers.

The frame and reply layouts, the reply cache's slots, and the signatures of the receiver's
buffer and of the packer's step record (the parts, and how they are joined: `hdl/protocol.py`).
Every part imports from here; this module imports none of them.
"""

from __future__ import annotations

from amaranth.hdl import Const
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from cellsp.sim.wire import PREFIX, Error, ProtocolLayout, Type

__all__ = ["MessageType", "ErrorCode", "ReplySource", "frame_layout", "reply_layout", "slot_of",
           "cache_stride", "set_reply", "buffer_signature", "step_record_signature",
           "answer_layout", "step_entry_layout"]


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
    BATCH = Type.BATCH
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


def step_entry_layout() -> data.StructLayout:
    """One step fed to the array, in the order the array steps them: whether it is a BATCH's
    step before its last (quiet: no reply of its own), its learn flag, and whether the running
    check of the output maps restarts at it (a BATCH's first step with `Flags.RESTART`)."""
    return data.StructLayout({"quiet": 1, "learn": 1, "restart": 1})


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



def answer_layout() -> data.StructLayout:
    """`StateTransfer`'s answer to a request: a reply (its type, payload length after the
    prefix, source, and whether the chunk index is its first two bytes) or a refusal."""
    return data.StructLayout({"reply": 1, "refuse": 1, "error": ErrorCode, "type": 8,
                              "length": 16, "source": ReplySource, "index": 16, "indexed": 1})
