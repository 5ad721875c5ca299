"""The host driver: one API over any transport (Verilator, serial, Amaranth's simulator).

    driver = Driver(transport, geometry)      # connect() identifies the device and checks it
    driver.load_state(GoldenModel(cfg).state())
    active, cycles = driver.step(x, learn=True)
    outputs, cycles = driver.run(X, learn=False)      # several frames in flight
    steps, check = driver.run(X, learn=True, outputs=False)   # BATCH requests: no maps back
    state = driver.read_state()

Every request carries a sequence number, and every reply echoes the request's check (its CRC
field): a reply is taken only as the answer to the exact request it answers, so a stale reply,
a duplicate or the answer to someone else's frame is never taken for this driver's (they are
counted in `ignored`). A lost or damaged request or reply is resent with the same number; the
engine executes a number once and answers a repeat of the same request from its reply cache,
so no input is lost or applied twice.

Every reply carries the engine's count of state changes (learning steps applied, loads begun,
resets). The driver counts the changes it asked for; any difference (a request from elsewhere
ran, a step was skipped or doubled) raises `StateDiverged`, and steps are refused until a state
is loaded. After any `DeviceError` the driver refuses further requests until `connect()`, which
resynchronises from the engine's own account (IDENTIFY is always executed) and always succeeds
against a live engine built from this config.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cellsp.sim.golden import SPState
from cellsp.sim.inputs import check_binary

from cellsp.sim.wire import (HEADER, TRAILER, VERSION, Decoder, Error, Flags, ProtocolLayout,
                             Reply, Type, encode, frame_check, maps_check, pack_bits,
                             unpack_bits)

__all__ = ["Driver", "DeviceError", "DeviceTimeout", "ConfigMismatch", "StateDiverged",
           "Transport"]


class DeviceError(RuntimeError):
    """The device refused a request or stopped answering; the driver needs `connect()`.

    Raised by `Driver.run`, it carries `partial`: (active, cycles) of the inputs that were
    applied exactly once, in order, before the failure."""


class DeviceTimeout(DeviceError):
    """The device did not answer within the timeout, after all retries."""


class ConfigMismatch(DeviceError):
    """The gateware was built from another config, geometry or protocol version."""


class StateDiverged(DeviceError):
    """The device's state changed in a way the host did not ask for (a request from elsewhere
    ran, or a step was skipped or doubled): load a state before stepping again."""


class Transport:
    """Bytes to and from a device. `read` returns what arrived within `timeout` seconds (maybe
    nothing) and never blocks longer."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, timeout: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class _Sent:
    """A request in flight: its frame, sequence number, check, and the state changes it makes
    when executed."""
    type: int
    seq: int
    frame: bytes
    check: int
    changes: int


class Driver:
    """Host side of the protocol for an array `geometry` (see the module docstring).

    timeout: seconds to wait for a reply before resending; retries: resends after a timeout
    before giving up; log: called with a line once the device has been silent for `quiet_s`
    seconds (and when it answers again); clock: the seconds those are measured in (wall-clock
    by default; a simulated link's own clock, such as `AmaranthLink.clock`, makes timeouts
    independent of how fast the simulator runs).
    """

    quiet_s = 4.0

    def __init__(self, transport: Transport, geometry, timeout: float = 2.0, retries: int = 3,
                 connect: bool = True, log=None, clock: Callable[[], float] = time.monotonic):
        self.transport = transport
        self.clock = clock
        self.geometry = geometry
        self.config = geometry.config
        self.layout = ProtocolLayout.for_geometry(geometry)
        self.timeout = timeout
        self.retries = retries
        self.log = log
        self.decoder = Decoder(max_payload=self.layout.max_reply)
        # bytes that complete any frame the engine may be stuck in (a damaged length field
        # makes it wait for up to the longest payload): it then refuses that frame and hunts
        # for the next marker, which zeros never are
        self.filler = bytes(HEADER + self.layout.max_payload + TRAILER)
        self.seq = 0
        self.inflight: dict[int, _Sent] = {}     # by sequence number
        self.replies: dict[int, Reply] = {}      # matched replies not yet consumed
        self.anonymous = 0       # errors about frames the engine could not parse
        self._resend = False     # an anonymous error arrived: resend what is in flight
        self.changes: int | None = None    # the engine's state changes, as the host counts them
        self.broken: str | None = None     # why requests are refused until connect()
        self.diverged: str | None = None   # why steps are refused until load_state()
        self.busy = {"loading": False, "reading": False, "held_chunk": 0xFFFF}
        self.retried = 0         # frames resent (for reports and tests)
        self.ignored = 0         # frames that answered none of this driver's requests
        self.old_version = None  # an IDENTIFY answer of an older protocol was seen
        self.batch_steps = 0     # the most inputs a BATCH carries (IDENTIFY; 0: no BATCH)
        if connect:
            self.connect()

    # ------------------------------------------------------------------ the exchange

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFF
        return seq

    def _collect(self, timeout: float) -> None:
        """Read what arrives within `timeout`; keep the replies that answer a request in
        flight, exactly (type, seq and check)."""
        data = self.transport.read(timeout)
        # a quiet link with a partial frame in the buffer: it will not complete (a damaged
        # length): look past it, as the engine drops a request cut off
        frames = self.decoder.feed(data) if data or timeout < 0.02 else self.decoder.stall()
        for frame in frames:
            if (frame.type == Type.IDENTIFY | Type.REPLY and frame.payload[:1] != bytes([VERSION])
                    and len(frame.payload) == struct.calcsize(ProtocolLayout.IDENTIFY_FORMAT)):
                self.old_version = frame.payload[0]     # protocol 1's IDENTIFY answer: no prefix
            reply = Reply.parse(frame)
            if reply is None:
                self.ignored += 1
                continue
            if reply.type == Type.ERROR and reply.request_type == Type.NONE:
                self.anonymous += 1
                self._resend = True
                continue
            sent = self.inflight.get(reply.seq)
            if (sent is None or reply.request_type != sent.type or reply.check != sent.check
                    or (reply.type != Type.ERROR and reply.type != sent.type | Type.REPLY)):
                self.ignored += 1
                continue
            old = self.replies.get(reply.seq)
            if old is None or old.type == Type.ERROR:   # an answer replaces an earlier error
                self.replies[reply.seq] = reply

    def _fail(self, exc: DeviceError) -> DeviceError:
        self.broken = str(exc)
        return exc

    def _account(self, reply: Reply, changes: int) -> None:
        """Check the engine's count of state changes against the host's, after a request that
        makes `changes` of them (0 for a refused one)."""
        want = self.changes + changes
        if reply.changes != want:
            self._diverge(reply.changes, want)
            raise StateDiverged(self.diverged + "; call connect(), then load a state")
        self.changes = want

    def _diverge(self, device: int, host: int) -> None:
        """The device's count of state changes is not the host's: steps are refused until a
        state is loaded; the host's count follows the device's from here."""
        self.changes = device
        self.diverged = (f"the device has made {device} state changes (learning steps, loads, "
                         f"resets), the host asked for {host}: a request from elsewhere ran on "
                         f"the device, or a step was lost")

    def _ahead(self, seq: int, expected: int) -> bool:
        """The engine expects an earlier number than `seq`: a frame before it was lost."""
        return 0 < (seq - expected) & 0xFF < 128

    def _refusal(self, name: str, sent: _Sent, reply: Reply) -> DeviceError:
        code, expected = reply.body[0], reply.body[1]
        todo = {Error.BAD_STATE: "finish the load or read-back, or reset the device; then "
                                 "connect()",
                Error.CONFLICT: "another program may be writing to the device: stop it, then "
                                "connect() (which checks whether the device's state changed)"}
        return DeviceError(f"{name} (seq {sent.seq}) refused: {Error.names.get(code, code)} "
                           f"(the device expects seq {expected}); nothing of it was executed; "
                           + todo.get(code, "call connect() to resynchronise"))

    def _exchange(self, requests, window: int = 1, consume=None, account: bool = True,
                  name=None) -> None:
        """Send `requests` [(type, payload, state changes)] with up to `window` in flight and
        call `consume(i, reply)` for each reply, in order. Damaged or lost frames either way
        are resent (the engine answers a repeat from its cache); anything else raises."""
        if self.broken:
            raise DeviceError(f"the driver stopped after an error ({self.broken}); call "
                              f"connect() first")
        name = name or (lambda i: Type.names.get(requests[i][0], hex(requests[i][0])))
        flight: deque[int] = deque()
        sent: dict[int, _Sent] = {}
        self._resend = False
        nxt = done = 0
        timeouts = resends = 0
        now = self.clock()
        deadline, quiet_since = now + self.timeout, now
        noted = False
        try:
            while done < len(requests):
                while nxt < len(requests) and len(flight) < window:
                    type_, payload, changes = requests[nxt]
                    seq = self._next_seq()
                    frame = encode(type_, seq, payload)
                    s = sent[nxt] = _Sent(type_, seq, frame, frame_check(frame), changes)
                    self.replies.pop(seq, None)
                    self.inflight[seq] = s
                    self.transport.write(frame)
                    flight.append(nxt)
                    nxt += 1
                self._collect(min(0.05, max(0.0, deadline - self.clock())))
                while flight:                                   # answers, oldest first
                    s = sent[flight[0]]
                    reply = self.replies.get(s.seq)
                    if reply is None or reply.type == Type.ERROR:
                        break
                    del self.replies[s.seq], self.inflight[s.seq]
                    if account:
                        self._account(reply, s.changes)
                    if consume:
                        consume(flight[0], reply)
                    flight.popleft()
                    done += 1
                    timeouts = resends = 0
                    now = self.clock()
                    deadline, quiet_since = now + self.timeout, now
                    if noted and self.log:
                        self.log("the device answers again")
                    noted = False
                if not flight:
                    continue
                resend, self._resend = self._resend, False
                for k, i in enumerate(flight):
                    reply = self.replies.get(sent[i].seq)
                    if reply is None or reply.type != Type.ERROR:
                        continue
                    if reply.code == Error.OUT_OF_ORDER and self._ahead(sent[i].seq,
                                                                        reply.body[1]):
                        resend = True           # an earlier frame was lost: all go again
                        del self.replies[sent[i].seq]
                    elif k == 0:                # refused: nothing of it was executed
                        if account:
                            self._account(reply, 0)
                        raise self._refusal(name(i), sent[i], reply)
                now = self.clock()
                if now > deadline:
                    timeouts += 1
                    resend = True
                elif resend:
                    resends += 1
                if resend:
                    if timeouts > self.retries or resends > 8 * (self.retries + 1):
                        raise DeviceTimeout(
                            f"no reply to {name(flight[0])} (seq {sent[flight[0]].seq}) after "
                            f"{timeouts + resends} tries over {now - quiet_since:.1f} s: is "
                            f"the device running, on this port, at this baud rate?")
                    if now > deadline:       # the engine may be inside a frame it waits for
                        self.transport.write(self.filler)
                    for i in flight:
                        reply = self.replies.get(sent[i].seq)
                        if reply is not None and reply.type == Type.ERROR:
                            del self.replies[sent[i].seq]
                        self.transport.write(sent[i].frame)
                        self.retried += 1
                    deadline = now + self.timeout
                if self.log and now - quiet_since > self.quiet_s and not noted:
                    noted = True
                    self.log(f"waiting for the device: no answer to {name(flight[0])} for "
                             f"{now - quiet_since:.0f} s (resending; gives up after "
                             f"{self.retries + 1} timeouts of {self.timeout:.3g} s)")
        except DeviceError as exc:
            self._fail(exc)
            raise
        except BaseException:
            self.broken = "interrupted in the middle of an exchange"
            raise
        finally:
            for i in flight:
                self.inflight.pop(sent[i].seq, None)

    def _request(self, type_: int, payload: bytes = b"", changes: int = 0,
                 account: bool = True) -> Reply:
        """One request; its reply."""
        out = []
        self._exchange([(type_, payload, changes)], consume=lambda i, r: out.append(r),
                       account=account)
        return out[0]

    # ------------------------------------------------------------------ API

    def identify(self) -> dict:
        """The device's IDENTIFY answer: protocol version, geometry, config hash, its count of
        state changes and whether a load or read-back is going on."""
        reply = self._request(Type.IDENTIFY, account=False)
        size = struct.calcsize(ProtocolLayout.IDENTIFY_FORMAT)
        version, h, w, hin, win, per_pe, digest = struct.unpack_from(
            ProtocolLayout.IDENTIFY_FORMAT, reply.body)
        status, held, batch = 0, 0xFFFF, 0       # an older protocol's status is shorter
        if len(reply.body) >= size + struct.calcsize(ProtocolLayout.IDENTIFY_STATUS):
            status, held, batch = struct.unpack_from(ProtocolLayout.IDENTIFY_STATUS,
                                                     reply.body, size)
        return {"version": version, "cell_shape": (h, w), "input_shape": (hin, win),
                "cells_per_pe": per_pe, "config_hash": digest.hex(), "changes": reply.changes,
                "loading": bool(status & 1), "reading": bool(status & 2), "held_chunk": held,
                "busy": bool(status & 3), "batch_steps": batch}

    def connect(self) -> dict:
        """Identify the device (IDENTIFY is always executed, and resynchronises the sequence
        numbers), check that it was built from this host's config and protocol, and compare
        its count of state changes with the host's: `info["diverged"]` is True when the
        device's state changed without the host (load a state before stepping)."""
        self.broken = None
        self.replies.clear()
        self.inflight.clear()
        self.decoder = Decoder(max_payload=self.layout.max_reply)
        self._resend = False
        self.transport.write(self.filler)
        self.old_version = None
        try:
            info = self.identify()
        except DeviceTimeout:
            if self.old_version is None:
                raise
            info = {"version": self.old_version}      # its answers are never taken for ours
        if info["version"] != VERSION:
            raise self._fail(ConfigMismatch(
                f"the device speaks protocol version {info['version']}, this host version "
                f"{VERSION}: rebuild the gateware (or the Verilator model) with this cellsp"))
        want = struct.unpack(ProtocolLayout.IDENTIFY_FORMAT,
                             ProtocolLayout.identify_payload(self.geometry))
        other = ProtocolLayout.layout_digest(self.config, not self.geometry.row_scan).hex()
        if info["config_hash"] == other and info["cell_shape"] == tuple(want[1:3]):
            kinds = ["the serial array", "the row-wide array"]
            built, used = kinds[not self.geometry.row_scan], kinds[self.geometry.row_scan]
            raise self._fail(ConfigMismatch(
                f"the gateware is {built} of this config, this host drives {used}, whose state "
                f"words come in another order: pass the array the device was built as "
                f"(--board NAME --array NAME; `cellsp boards` lists them)"))
        if info["config_hash"] == want[-1].hex() and info["cells_per_pe"] != want[5]:
            raise self._fail(ConfigMismatch(
                f"the gateware was built with {info['cells_per_pe']} cells per processing "
                f"element, this host uses {want[5]}, whose state words come in another order: "
                f"pass the cells per PE the device was built with (--cells-per-pe), or its "
                f"board and array"))
        if info["config_hash"] != want[-1].hex() or info["cell_shape"] != tuple(want[1:3]):
            raise self._fail(ConfigMismatch(
                f"the gateware was built from config {info['config_hash']} "
                f"({info['cell_shape'][0]}x{info['cell_shape'][1]} cells), this host uses "
                f"{want[-1].hex()} ({want[1]}x{want[2]} cells): rebuild the gateware from this "
                f"config, or pass the config it was built from (--config FILE)"))
        if self.changes is not None and info["changes"] != self.changes:
            self._diverge(info["changes"], self.changes)
        self.changes = info["changes"]
        self.batch_steps = info["batch_steps"]
        self.busy = {k: info[k] for k in ("loading", "reading", "held_chunk")}
        info["diverged"] = self.diverged is not None
        return info

    @staticmethod
    def _step_payload(x, learn: bool) -> bytes:
        """A STEP's payload for a checked input (`check_binary`)."""
        return bytes([1 if learn else 0]) + pack_bits(x)

    def _step_result(self, reply: Reply):
        cycles = struct.unpack_from("<I", reply.body)[0]
        active = unpack_bits(reply.body[4:], self.config.num_cells)
        return active.reshape(self.config.cell_shape), cycles

    def _check_steps(self) -> None:
        if self.diverged and not self.broken:
            raise StateDiverged(self.diverged + "; load a state (load_state) before stepping")
        if self.busy["loading"] or self.busy["reading"]:
            raise DeviceError("a load or read-back is going on: finish it (load_state, "
                              "read_state) or reset the device")

    def step(self, x, *, learn: bool):
        """One input: returns (active cells (H, W) bool, the step's cycle count)."""
        self._check_steps()
        x = check_binary(x, self.config.input_shape, batch=False)
        return self._step_result(self._request(Type.STEP, self._step_payload(x, learn),
                                               changes=int(bool(learn))))

    def run(self, X, *, learn: bool, window: int | None = None, progress=None,
            outputs: bool = True):
        """Inputs (T, Hin, Win): returns (active (T, H, W) bool, cycles (T,)), keeping up to
        `window` requests in flight (default 4; at most the engine's reply window). On a
        failure the exception carries `partial`: the results of the inputs applied before it.

        With `outputs=False` the maps stay on the device: returns (steps, check), the count of
        steps applied and `cellsp.sim.wire.maps_check` of all their output maps, which equals
        the golden model's for a bit-exact device (BATCH requests of up to `batch_steps`
        inputs, `window` of them in flight, by default `ProtocolLayout.batch_window`: as many
        as a board's receive FIFO holds whatever the engine does; a board whose array steps
        faster than its UART carries inputs drains its FIFO as the bytes arrive and takes up
        to 8; a device without BATCH gets STEPs and the host computes the check). `partial`
        is then (steps, check) of the inputs applied before the failure."""
        if not outputs and self.batch_steps:
            return self._run_batches(X, learn, progress, window or self.layout.batch_window)
        if not outputs:
            out, _ = self.run(X, learn=learn, window=window, progress=progress)
            return len(out), maps_check(out)
        X = check_binary(X, self.config.input_shape, batch=True)   # all before sending
        payloads = [self._step_payload(x, learn) for x in X]
        window = max(1, min(window or 4, self.layout.reply_window))
        T = len(payloads)
        out = np.zeros((T,) + tuple(self.config.cell_shape), bool)
        cycles = np.zeros(T, np.int64)
        done = [0]

        def consume(t, reply):
            out[t], cycles[t] = self._step_result(reply)
            done[0] = t + 1
            if progress:
                progress(1)
        try:
            self._check_steps()
            self._exchange([(Type.STEP, p, int(bool(learn))) for p in payloads], window,
                           consume, name=lambda t: f"STEP {t}")
        except BaseException as exc:
            exc.partial = (out[:done[0]], cycles[:done[0]])
            raise
        return out, cycles

    def _run_batches(self, X, learn: bool, progress, window: int):
        """`run(X, outputs=False)` in BATCH requests (see `run`)."""
        X = check_binary(X, self.config.input_shape, batch=True)   # all before sending
        k = self.batch_steps
        flags = Flags.LEARN if learn else 0
        requests = []
        for start in range(0, len(X), k):
            part = X[start:start + k]
            payload = bytes([flags | (Flags.RESTART if start == 0 else 0)])
            payload += b"".join(pack_bits(x) for x in part)
            requests.append((Type.BATCH, payload, len(part) * int(bool(learn))))
        sizes = [min(k, len(X) - start) for start in range(0, len(X), k)]
        done = [0, 0]                    # steps applied, their running check

        def consume(i, reply):
            steps, check = struct.unpack_from("<II", reply.body)
            want = sum(sizes[:i + 1])
            if steps != want:
                raise self._fail(StateDiverged(
                    f"BATCH {i} (seq {reply.seq}): the device counts {steps} steps of this run, "
                    f"the host sent {want}: a step was lost or applied twice; call connect(), "
                    f"then load a state"))
            done[:] = [steps, check]
            if progress:
                progress(sizes[i])
        try:
            self._check_steps()
            if requests:
                self._exchange(requests, max(1, min(window, self.layout.reply_window)), consume,
                               name=lambda i: f"BATCH {i} (inputs {i * k}-"
                                              f"{i * k + sizes[i] - 1})")
        except BaseException as exc:
            exc.partial = tuple(done)
            raise
        return done[0], done[1]

    def load_state(self, state: SPState) -> None:
        """Replace the device's whole state (permanences, duty cycles, boosts). A load left
        unfinished (by an error, or by another program) is abandoned first by a reset."""
        words = self.geometry.state_to_words(state)
        if self.busy["loading"] or self.busy["reading"]:
            self.reset()
        self.busy["loading"] = True
        self._request(Type.LOAD_BEGIN, changes=1)
        wb, size = self.layout.word_bytes, self.layout.chunk_words
        for index in range(self.layout.chunks):
            part = words[index * size:(index + 1) * size]
            data = b"".join(int(v).to_bytes(wb, "little") for v in part)
            self._request(Type.LOAD_CHUNK, struct.pack("<H", index) + data)
        self.busy["loading"] = False
        self.diverged = None

    def read_state(self) -> SPState:
        """The device's whole state. A read-back left unfinished (by an error, or by another
        program) is first read to its end (it does not change the state)."""
        if self.busy["loading"]:
            raise DeviceError("a load is unfinished: the device's state is incomplete; load a "
                              "state (load_state) or reset the device")
        if self.busy["reading"]:
            held = self.busy["held_chunk"]
            for index in range(0 if held == 0xFFFF else held + 1, self.layout.chunks):
                self._request(Type.READ_CHUNK, struct.pack("<H", index))
            self.busy["reading"] = False
        self.busy.update(reading=True, held_chunk=0xFFFF)
        self._request(Type.READ_BEGIN)
        wb = self.layout.word_bytes
        words = []
        for index in range(self.layout.chunks):
            reply = self._request(Type.READ_CHUNK, struct.pack("<H", index))
            self.busy["held_chunk"] = index
            data = reply.body[2:]
            words += [int.from_bytes(data[i:i + wb], "little") for i in range(0, len(data), wb)]
        self.busy["reading"] = False
        return self.geometry.words_to_state(words)

    def reset(self) -> None:
        """Reset the array: its state is lost (load one before stepping). Abandons a load or
        read-back."""
        self._request(Type.RESET, changes=1)
        self.busy.update(loading=False, reading=False, held_chunk=0xFFFF)
        self.diverged = "the device was reset"

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
