"""The host driver: one API over any transport (Verilator, serial, Amaranth's simulator).

    driver = Driver(transport, geometry)      # identify() is checked on connect
    driver.load_state(GoldenModel(cfg).state())
    active, cycles = driver.step(x, learn=True)
    outputs = driver.run(X, learn=False)      # several frames in flight
    state = driver.read_state()

Every request carries a sequence number. A lost or damaged request or reply is retried with
the same number; the engine executes a number once and answers a repeat from its reply cache,
so no input is lost or applied twice.
"""

from __future__ import annotations

import struct
import time
from collections import deque

import numpy as np

from cellsp.sim.golden import SPState
from cellsp.sim.inputs import check_binary

from .protocol import Decoder, Error, Frame, ProtocolLayout, Type, encode, pack_bits, unpack_bits

__all__ = ["Driver", "DeviceError", "DeviceTimeout", "ConfigMismatch", "Transport"]


class DeviceError(RuntimeError):
    """The device answered with an error it cannot recover from."""


class DeviceTimeout(DeviceError):
    """The device did not answer within the timeout, after all retries."""


class ConfigMismatch(DeviceError):
    """The gateware was built from another config or geometry than the host's."""


#: errors after which the same frame goes again: it was damaged or cut off on the way in
RESEND = (Error.BAD_CRC, Error.TIMEOUT)


class Transport:
    """Bytes to and from a device. `read` returns what arrived within `timeout` seconds (maybe
    nothing) and never blocks longer."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, timeout: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Driver:
    """Host side of the protocol for an array `geometry` (see module docstring).

    timeout: seconds to wait for a reply before retrying; retries: resends before giving up.
    """

    def __init__(self, transport: Transport, geometry, timeout: float = 2.0, retries: int = 3,
                 connect: bool = True):
        self.transport = transport
        self.geometry = geometry
        self.config = geometry.config
        self.layout = ProtocolLayout.for_geometry(geometry)
        self.timeout = timeout
        self.retries = retries
        self.decoder = Decoder(max_payload=self.layout.max_reply)
        self.pending: dict[int, Frame] = {}
        self.seq = 0
        self.retried = 0            # requests resent (for reports and tests)
        if connect:
            self.connect()

    # ------------------------------------------------------------------ requests

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFF
        return seq

    def _collect(self, timeout: float) -> None:
        for frame in self.decoder.feed(self.transport.read(timeout)):
            self.pending[frame.seq] = frame

    def _wait(self, seq: int, deadline: float) -> Frame | None:
        while seq not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._collect(min(left, 0.05))
        return self.pending.pop(seq)

    def _resync(self, error: Frame) -> None:
        """After a refused request: continue from the sequence number the device expects, and
        forget replies still pending (the next request starts clean)."""
        if len(error.payload) > 1:
            self.seq = error.payload[1]
        self.pending.clear()

    def _refused(self, name: str, seq: int, reply: Frame) -> DeviceError:
        """The error for a request the device refused (and resynchronise to its seq)."""
        self._resync(reply)
        code = reply.payload[0] if reply.payload else 0
        todo = ("finish the load or read-back, or reset the device" if code == Error.BAD_STATE
                else "reconnect (Driver.connect) or reset the device")
        return DeviceError(
            f"{name} (seq {seq}) refused: {Error.names.get(code, code)}"
            + (f" (device expects seq {reply.payload[1]})" if len(reply.payload) > 1 else "")
            + f"; {todo}")

    def _request(self, type_: int, payload: bytes = b"", seq: int | None = None) -> Frame:
        """Send a request and return its reply, retrying with the same sequence number."""
        seq = self._next_seq() if seq is None else seq
        self.pending.pop(seq, None)               # a stale reply from before a resync
        frame = encode(type_, seq, payload)
        name = Type.names.get(type_, hex(type_))
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self.transport.write(frame)
            reply = self._wait(seq, time.monotonic() + self.timeout)
            if reply is None:
                continue
            if reply.type == Type.ERROR:
                if reply.payload[:1] and reply.payload[0] in RESEND:
                    continue
                raise self._refused(name, seq, reply)
            if reply.type != type_ | Type.REPLY:
                raise DeviceError(f"{name} (seq {seq}) answered with type 0x{reply.type:02x}")
            return reply
        raise DeviceTimeout(f"no reply to {name} (seq {seq}) after {self.retries + 1} tries of "
                            f"{self.timeout} s: is the device running and on this port?")

    # ------------------------------------------------------------------ API

    def identify(self) -> dict:
        reply = self._request(Type.IDENTIFY)
        fields = struct.unpack(ProtocolLayout.IDENTIFY_FORMAT, reply.payload)
        version, h, w, hin, win, per_pe, digest = fields
        return {"version": version, "cell_shape": (h, w), "input_shape": (hin, win),
                "cells_per_pe": per_pe, "config_hash": digest.hex()}

    def connect(self) -> dict:
        """Identify the device and check that it was built from this host's config."""
        info = self.identify()
        want = struct.unpack(ProtocolLayout.IDENTIFY_FORMAT,
                             ProtocolLayout.identify_payload(self.geometry))
        if info["config_hash"] != want[-1].hex() or info["cell_shape"] != tuple(want[1:3]):
            raise ConfigMismatch(
                f"the gateware was built from config {info['config_hash']} "
                f"({info['cell_shape'][0]}x{info['cell_shape'][1]} cells), this host uses "
                f"{want[-1].hex()} ({want[1]}x{want[2]} cells): rebuild the gateware from this "
                f"config, or pass the config it was built from (--config FILE)")
        return info

    def _step_payload(self, x, learn: bool) -> bytes:
        x = check_binary(x, self.config.input_shape, batch=False)
        return bytes([1 if learn else 0]) + pack_bits(x)

    def _step_result(self, reply: Frame):
        cycles = struct.unpack_from("<I", reply.payload)[0]
        active = unpack_bits(reply.payload[4:], self.config.num_cells)
        return active.reshape(self.config.cell_shape), cycles

    def step(self, x, learn: bool = False):
        """One input: returns (active cells (H, W) bool, the step's cycle count)."""
        return self._step_result(self._request(Type.STEP, self._step_payload(x, learn)))

    def run(self, X, learn: bool = False, window: int = 4, progress=None):
        """Inputs (T, Hin, Win): returns (active (T, H, W) bool, cycles (T,)), keeping up to
        `window` requests in flight (at most the engine's reply window)."""
        X = np.asarray(X)
        if X.ndim != 3:
            raise ValueError(f"run() takes a batch (T, Hin, Win), got shape {X.shape}")
        payloads = [self._step_payload(x, learn) for x in X]    # all checked before sending
        window = max(1, min(window, self.layout.reply_window))
        T = len(payloads)
        out = np.zeros((T,) + tuple(self.config.cell_shape), bool)
        cycles = np.zeros(T, np.int64)
        seqs = {}
        sent = deque()            # indices in flight, oldest first
        attempts = {}
        nxt = done = 0
        deadline = None
        while done < T:
            while nxt < T and len(sent) < window:
                seqs[nxt] = self._next_seq()
                self.pending.pop(seqs[nxt], None)
                self.transport.write(encode(Type.STEP, seqs[nxt], payloads[nxt]))
                sent.append(nxt)
                attempts[nxt] = 1
                nxt += 1
                deadline = time.monotonic() + self.timeout
            self._collect(0.05)
            progressed = False
            while sent and seqs[sent[0]] in self.pending:
                t = sent[0]
                if self.pending[seqs[t]].type == Type.ERROR:
                    break                        # handled below, from the oldest
                out[t], cycles[t] = self._step_result(self.pending.pop(seqs[t]))
                sent.popleft()
                done += 1
                progressed = True
                if progress:
                    progress(1)
            if progressed:
                deadline = time.monotonic() + self.timeout
            oldest_failed = sent and seqs[sent[0]] in self.pending
            if oldest_failed:
                # out of order: an earlier frame in flight was lost; it all goes again below
                error = self.pending[seqs[sent[0]]]
                if error.payload[:1] and error.payload[0] not in RESEND + (Error.OUT_OF_ORDER,):
                    raise self._refused(f"STEP {sent[0]}", seqs[sent[0]], error)
            if sent and (oldest_failed or time.monotonic() > deadline):
                t = sent[0]
                if attempts[t] > self.retries:
                    raise DeviceTimeout(f"no reply to STEP {t} (seq {seqs[t]}) after "
                                        f"{attempts[t]} tries: is the device running?")
                for u in sent:                    # resend everything in flight, in order
                    self.pending.pop(seqs[u], None)
                    self.transport.write(encode(Type.STEP, seqs[u], payloads[u]))
                    attempts[u] += 1
                    self.retried += 1
                deadline = time.monotonic() + self.timeout
        return out, cycles

    def load_state(self, state: SPState) -> None:
        """Replace the device's whole state (permanences, duty cycles, boosts)."""
        words = self.geometry.state_to_words(state)
        self._request(Type.LOAD_BEGIN)
        wb, size = self.layout.word_bytes, self.layout.chunk_words
        for index in range(self.layout.chunks):
            part = words[index * size:(index + 1) * size]
            data = b"".join(int(v).to_bytes(wb, "little") for v in part)
            self._request(Type.LOAD_CHUNK, struct.pack("<H", index) + data)

    def read_state(self) -> SPState:
        self._request(Type.READ_BEGIN)
        wb = self.layout.word_bytes
        words = []
        for index in range(self.layout.chunks):
            reply = self._request(Type.READ_CHUNK, struct.pack("<H", index))
            data = reply.payload[2:]
            words += [int.from_bytes(data[i:i + wb], "little") for i in range(0, len(data), wb)]
        return self.geometry.words_to_state(words)

    def reset(self) -> None:
        """Reset the array: its state is lost (load one before stepping)."""
        self._request(Type.RESET)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
