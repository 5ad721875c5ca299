"""The cellsp wire protocol: framing, CRC, message types and payload layouts (see PROTOCOL.md).

Everything here is pure Python and shared by the host driver, the tests and the HDL protocol
engine's generator (which takes its constants from this module), so both ends of the link are
built from one definition.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["VERSION", "MARKER", "Type", "Error", "Frame", "Reply", "crc16", "encode",
           "frame_check", "Decoder", "ProtocolLayout", "pack_bits", "unpack_bits", "maps_check",
           "Flags", "MAX_BATCH_STEPS"]

VERSION = 4
MARKER = 0xA5
HEADER = 5          # marker, type, seq, length (2 bytes)
TRAILER = 2         # CRC
PREFIX = 6          # every reply payload: the request's check (2 bytes), state changes (4)


class Type:
    """Request types; a reply has the request's type | REPLY, an error reply type ERROR."""
    IDENTIFY = 0x01
    STEP = 0x02
    LOAD_BEGIN = 0x03
    LOAD_CHUNK = 0x04
    READ_BEGIN = 0x05
    READ_CHUNK = 0x06
    RESET = 0x07
    BATCH = 0x08
    REPLY = 0x80
    ERROR = 0xFF
    # an error reply's request type when the frame could not be parsed (bad CRC, too long,
    # cut off): it answers no request (seq 0, check 0); the driver resends what is in flight
    NONE = 0x00

    names = {0x01: "IDENTIFY", 0x02: "STEP", 0x03: "LOAD_BEGIN", 0x04: "LOAD_CHUNK",
             0x05: "READ_BEGIN", 0x06: "READ_CHUNK", 0x07: "RESET", 0x08: "BATCH",
             0xFF: "ERROR"}


class Flags:
    """The first payload byte of a STEP or BATCH request."""
    LEARN = 0x01          # the step (every step of the batch) learns
    RESTART = 0x02        # BATCH: the running check and step count start again at this batch


#: the most inputs one BATCH request carries
MAX_BATCH_STEPS = 8


class Error:
    """Error codes (first payload byte of an ERROR reply; the second is the expected seq)."""
    BAD_CRC = 1
    TOO_LONG = 2
    BAD_LENGTH = 3
    UNKNOWN_TYPE = 4
    OUT_OF_ORDER = 5
    TIMEOUT = 6
    BAD_STATE = 7
    CONFLICT = 8

    names = {1: "bad CRC", 2: "frame too long", 3: "wrong payload length for its type",
             4: "unknown type", 5: "sequence number out of order", 6: "frame cut off (timeout)",
             7: "request not valid now (load/read not begun, or wrong chunk)",
             8: "another request already ran with this sequence number"}


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, MSB first, no final XOR (the
    gateware's is `amaranth.lib.crc.catalog.CRC16_CCITT_FALSE`). `binascii.crc_hqx` is this
    CRC from a given start value; its check value: crc16(b"123456789") == 0x29B1."""
    return binascii.crc_hqx(data, crc)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode(self.type, self.seq, self.payload)

    @property
    def name(self) -> str:
        base = self.type & ~Type.REPLY if self.type != Type.ERROR else self.type
        return Type.names.get(base, f"0x{self.type:02x}") + (
            " reply" if self.type & Type.REPLY and self.type != Type.ERROR else "")


def encode(type_: int, seq: int, payload: bytes = b"") -> bytes:
    body = bytes([type_ & 0xFF, seq & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([MARKER]) + body + struct.pack("<H", crc16(body))


def frame_check(frame: bytes) -> int:
    """A request's check: its CRC field, which every reply to it echoes (so a reply is taken
    only as the answer to the exact request it answers, not to another with the same seq)."""
    return struct.unpack_from("<H", frame, len(frame) - TRAILER)[0]


@dataclass(frozen=True)
class Reply:
    """A reply frame, its payload split: the check of the request it answers, the engine's
    count of state changes (learning steps applied, loads begun, resets; a STEP's includes its
    own learning), and the rest. An ERROR's rest is the error code, the sequence number the
    engine expects next and the refused request's type (Type.NONE: a frame it could not
    parse, which answers no request)."""
    type: int
    seq: int
    check: int
    changes: int
    body: bytes

    @classmethod
    def parse(cls, frame: Frame) -> "Reply | None":
        """None for a frame too short to be a reply."""
        if len(frame.payload) < PREFIX + (3 if frame.type == Type.ERROR else 0):
            return None
        check, changes = struct.unpack_from("<HI", frame.payload)
        return cls(frame.type, frame.seq, check, changes, frame.payload[PREFIX:])

    @property
    def request_type(self) -> int:
        """The type of the request this answers (Type.NONE for an anonymous error)."""
        return self.body[2] if self.type == Type.ERROR else self.type & ~Type.REPLY

    @property
    def code(self) -> int:
        return self.body[0] if self.type == Type.ERROR else 0


class Decoder:
    """Incremental frame decoder (host side): feed bytes, get whole frames with a good CRC.

    Bytes before a marker, and frames whose CRC fails or whose length exceeds `max_payload`, are
    dropped (counted in `dropped`); decoding resumes at the next marker after the bad one.
    """

    def __init__(self, max_payload: int = 65535):
        self.buffer = bytearray()
        self.max_payload = max_payload
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(MARKER)
            if start < 0:
                self.dropped += len(self.buffer)
                self.buffer.clear()
                return frames
            if start:
                self.dropped += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER:
                return frames
            length = struct.unpack_from("<H", self.buffer, 3)[0]
            if length > self.max_payload:
                self.dropped += 1
                del self.buffer[:1]
                continue
            total = HEADER + length + TRAILER
            if len(self.buffer) < total:
                return frames
            body = bytes(self.buffer[1:HEADER + length])
            crc = struct.unpack_from("<H", self.buffer, HEADER + length)[0]
            if crc16(body) != crc:
                self.dropped += 1
                del self.buffer[:1]
                continue
            frames.append(Frame(body[0], body[1], body[4:]))
            del self.buffer[:total]

    def stall(self) -> list[Frame]:
        """Nothing arrived for a while, so a partial frame in the buffer will never complete
        (its length was damaged, or its end lost): drop its marker and decode what follows."""
        if not self.buffer:
            return []
        self.dropped += 1
        del self.buffer[:1]
        return self.feed(b"")


def pack_bits(bits) -> bytes:
    """Flat bits, bit i in byte i // 8 at position i % 8 (LSB first)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int) -> np.ndarray:
    """The first `count` bits of `data` (packed by `pack_bits`), as bools."""
    return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:count].astype(bool)


def maps_check(maps, crc: int = 0) -> int:
    """The running check a BATCH reply carries: CRC-32 (ISO-HDLC, zlib's; the gateware's is
    `amaranth.lib.crc.catalog.CRC32_ISO_HDLC`) over every output map packed as a STEP reply
    packs it (`pack_bits`, one map after another), resumed from `crc`."""
    for active in maps:
        crc = binascii.crc32(pack_bits(active), crc)
    return crc


@dataclass(frozen=True)
class ProtocolLayout:
    """Payload sizes for one array geometry (both ends derive them from the geometry)."""

    num_inputs: int
    num_cells: int
    state_words: int
    state_word_bits: int
    chunk_words: int = 128
    reply_window: int = 8            # STEP replies kept for retries (a power of two)
    batching: bool = True            # the engine executes BATCH requests

    @classmethod
    def for_geometry(cls, geometry, batching: bool = True) -> "ProtocolLayout":
        cfg = geometry.config
        return cls(cfg.num_inputs, cfg.num_cells, geometry.state_words, geometry.state_word_bits,
                   batching=batching)

    @property
    def input_bytes(self) -> int:
        """One input's bytes in a STEP or BATCH request."""
        return -(-self.num_inputs // 8)

    @property
    def window_bytes(self) -> int:
        """The request bytes the host keeps in flight at most: a full window of STEP frames
        (a board's receive FIFO holds them)."""
        return self.reply_window * (HEADER + TRAILER + self.step_request)

    @property
    def batch_steps(self) -> int:
        """The most inputs a BATCH request carries (0: the engine does not batch): up to
        MAX_BATCH_STEPS, so that two BATCH frames fit in `window_bytes` and one in the
        receiver's buffer."""
        if not self.batching:
            return 0
        frame = HEADER + TRAILER + 1
        buffer = max(self.step_request, 2 + self.chunk_bytes)
        fits = min((self.window_bytes // 2 - frame) // self.input_bytes,
                   (buffer - 1) // self.input_bytes)
        return max(1, min(MAX_BATCH_STEPS, fits))

    def batch_request(self, steps: int) -> int:
        """A BATCH request's payload: the flags byte, then `steps` inputs, each packed as a
        STEP's."""
        return 1 + steps * self.input_bytes

    @property
    def batch_window(self) -> int:
        """BATCH frames the host keeps in flight: as many full ones as fit in `window_bytes`."""
        frame = HEADER + TRAILER + self.batch_request(max(1, self.batch_steps))
        return max(1, min(self.reply_window, self.window_bytes // frame))

    @property
    def batch_reply(self) -> int:
        """The reply prefix, the steps since the check restarted (u32), the running check
        (u32, `maps_check`)."""
        return PREFIX + 8

    @property
    def word_bytes(self) -> int:
        return -(-self.state_word_bits // 8)

    @property
    def step_request(self) -> int:
        """flags byte (bit 0: learn), then the input bits packed LSB first, raster order."""
        return 1 + -(-self.num_inputs // 8)

    @property
    def step_reply(self) -> int:
        """The reply prefix, the cycles (u32 little-endian), then the active cells packed LSB
        first, raster order."""
        return PREFIX + 4 + -(-self.num_cells // 8)

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_words * self.word_bytes

    @property
    def max_payload(self) -> int:
        """The longest request payload the engine accepts: a step or a full LOAD_CHUNK."""
        return max(self.step_request, 2 + self.chunk_bytes,
                   self.batch_request(self.batch_steps))

    @property
    def max_reply(self) -> int:
        """The longest reply payload: a step's, a full READ_CHUNK's or IDENTIFY's."""
        identify = struct.calcsize(self.IDENTIFY_FORMAT + self.IDENTIFY_STATUS[1:])
        return PREFIX + max(self.step_reply - PREFIX, 2 + self.chunk_bytes, identify, 3,
                            self.batch_reply - PREFIX)

    @property
    def chunks(self) -> int:
        return -(-self.state_words // self.chunk_words)

    def chunk_size(self, index: int) -> int:
        """Words in chunk `index` (the last one may be short)."""
        return min(self.chunk_words, self.state_words - index * self.chunk_words)

    # version, H, W, Hin, Win, cells_per_pe (4 bytes: a band PE may serve hundreds), layout
    # digest (`layout_digest`); the reply adds IDENTIFY_STATUS
    IDENTIFY_FORMAT = "<BHHHHI8s"
    # status (bit 0: a load in progress, bit 1: a read-back in progress), the chunk last read,
    # then the most inputs a BATCH carries (0: no BATCH)
    IDENTIFY_STATUS = "<BHB"

    @staticmethod
    def identify_payload(geometry) -> bytes:
        """IDENTIFY's reply bytes before its status (`IDENTIFY_FORMAT`)."""
        cfg = geometry.config
        return struct.pack(ProtocolLayout.IDENTIFY_FORMAT, VERSION, *cfg.cell_shape,
                           *cfg.input_shape, geometry.cells_per_pe,
                           ProtocolLayout.layout_digest(cfg, geometry.row_scan))

    @staticmethod
    def layout_digest(config, row_scan: bool = False) -> bytes:
        """The 8 bytes IDENTIFY names a build's config and state-word order by: the config
        hash's first 16 hex digits, or for the row-wide array (`ArrayGeometry.row_scan`, whose
        state words come in another order) those of a hash of the config hash and "row_scan",
        so a host with the other layout refuses the device instead of loading a state into
        the wrong synapses."""
        if not row_scan:
            return bytes.fromhex(config.hash[:16])
        return hashlib.sha256(f"{config.hash}:row_scan".encode()).digest()[:8]
