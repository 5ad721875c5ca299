"""`cellsp bench fuzz`: a fault-injection campaign against the real protocol engine.

The host `Driver` talks to the engine (the compiled Verilator model of `hdl/protocol.py`, or the
exact board gateware behind a pseudo-terminal) through `FaultyTransport`, which damages the
byte stream between them: per frame the driver writes, with small probabilities, a bit flip in
one field (marker, type, seq, length low or high byte, payload, CRC), a truncation, a
duplicate, a drop, random bytes before it, a frame of an unknown type, a replay of an older
frame, a copy with 1-3 payload bytes too many or too few or with a future or past sequence
number (good CRCs), or a *foreign* valid frame (good CRC, a real request: STEP with another
input and a random learn flag, IDENTIFY, LOAD_BEGIN, READ_BEGIN, RESET, READ_CHUNK) carrying
the sequence number of the frame being written; and in the reply direction, a bit flip or a
dropped span of what `read()` returns. Every frame that goes over the link counts (valid and
faulty); the campaign runs until `frames` have.

Valid work is interleaved: pipelined `run` batches (learning and inference), single `step`s,
state loads and read-backs under faults, and loads and read-backs interrupted part-way (the
host stops in the middle, as on Ctrl-C). A `GoldenModel` shadows the device. The campaign
counts, and all three must be 0:

- **wrong outputs**: an output returned without an exception (by `step`, `run`, a failed run's
  `partial` results, or a read-back) that differs from the golden model's;
- **undetected state differences**: a read-back (faults off) after each error, every
  `sync_every` operations and at the end that differs from the golden state while the driver
  has not announced a divergence (`StateDiverged`, or `connect()`'s ``diverged``) since the
  last such check; a load that returned but did not take counts too;
- **hangs**: a driver call that neither returns nor raises within `hang_seconds`.

`DeviceTimeout`s are allowed (a frame dropped on every try) and counted apart.

The faults, the operations and the inputs are drawn from generators seeded by `seed`
(`random.Random`, numpy's `default_rng`); which frame a fault hits still depends on timing
(a reply that arrives after the driver's timeout makes it resend, and the resend draws too),
so two runs with one seed make the same kinds of faults in the same proportions, not the
same stream byte for byte.
"""

from __future__ import annotations

import random
import signal
import struct
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager

import numpy as np

from cellsp.sim import GoldenModel, SPConfig, wire
from cellsp.sim.bench import machine_info
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import ProtocolLayout, Type, encode, maps_check, pack_bits

from . import driver as driver_module
from .pty_link import board_pty_link
from .targets import open_driver

__all__ = ["bench_fuzz", "fuzz_target", "FaultyTransport", "FUZZ_CONFIG", "TEST_CONFIG",
           "DEFAULT_FAULTS", "DEFAULT_REPLY_FAULTS", "split_frames", "summary_lines"]

#: per frame the driver writes: the probability of each fault (the rest go through intact)
DEFAULT_FAULTS = {
    "bit_flip": 0.030,       # one bit of one field (see BIT_FIELDS)
    "truncate": 0.010,       # only the frame's first k bytes
    "duplicate": 0.010,      # the frame twice
    "drop": 0.008,           # not sent at all
    "junk": 0.010,           # 1-40 random bytes (some of them markers) before it
    "unknown_type": 0.008,   # a well-formed frame of an unknown type before it
    "replay": 0.008,         # an older frame of the driver's before it
    "wrong_length": 0.006,   # sent with 1-3 payload bytes more or fewer (good CRC) instead
    "future_seq": 0.006,     # sent with a sequence number 1-30 ahead (good CRC) instead
    "past_seq": 0.006,       # sent with a sequence number 1-40 behind (good CRC) instead
    "foreign": 0.012,        # a foreign valid request with the frame's own seq before it
}
#: per read() that returns bytes: the probability of each fault on the reply stream
DEFAULT_REPLY_FAULTS = {"reply_bit_flip": 0.015, "reply_drop_bytes": 0.010}

BIT_FIELDS = ("marker", "type", "seq", "length_low", "length_high", "payload", "crc")
FOREIGN_KINDS = ("STEP", "IDENTIFY", "LOAD_BEGIN", "READ_BEGIN", "RESET", "READ_CHUNK",
                 "BATCH")
FOREIGN_WEIGHTS = (4, 1, 1, 1, 1, 1, 2)


#: tests/test_pty_link.py's config: 3 processing elements of 3 cells, a 15-30 s build
TEST_CONFIG = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                       boost_strength=1.0, stimulus_threshold=1, duty_period_log2=2,
                       min_overlap_duty_pct=0.5)
#: the campaign's default config: 8x8 cells
FUZZ_CONFIG = SPConfig(input_shape=(16, 16), cell_shape=(8, 8), potential_radius=2,
                       boost_strength=1.0, stimulus_threshold=1, duty_period_log2=3,
                       min_overlap_duty_pct=0.5)


# ---------------------------------------------------------------------- frames


def split_frames(data: bytes) -> list[bytes]:
    """The frames in a driver's write (normally one); bytes that do not parse stay one piece."""
    header, trailer = wire.HEADER, wire.TRAILER
    out, i = [], 0
    while i < len(data):
        if data[i] != wire.MARKER or len(data) - i < header + trailer:
            out.append(bytes(data[i:]))
            break
        total = header + struct.unpack_from("<H", data, i + 3)[0] + trailer
        if len(data) - i < total:
            out.append(bytes(data[i:]))
            break
        out.append(bytes(data[i:i + total]))
        i += total
    return out


def _fields(frame: bytes) -> dict[str, range]:
    header, trailer = wire.HEADER, wire.TRAILER
    n = len(frame)
    return {"marker": range(0, 1), "type": range(1, 2), "seq": range(2, 3),
            "length_low": range(3, 4), "length_high": range(4, 5),
            "payload": range(header, n - trailer), "crc": range(n - trailer, n)}


def _reencode(frame: bytes, seq: int) -> bytes:
    header, trailer = wire.HEADER, wire.TRAILER
    return wire.encode(frame[1], seq & 0xFF, frame[header:len(frame) - trailer])


class FaultyTransport:
    """A driver transport that damages the stream to and from `inner` (see the module docstring).

    `faults`, `reply_faults`: probabilities by kind; `foreign(seq)` makes a foreign valid request
    frame with sequence number `seq`, returning (kind, bytes). Faults apply only while `enabled`.
    `frames` counts every frame written to `inner` (valid or faulty, junk counted as one);
    `faults_by_kind` every fault made. `interrupt_after`: when set, the write after that many
    more frames raises `HostInterrupt` (the host stopping part-way through a load or read-back).
    """

    def __init__(self, inner, rng: random.Random, faults=None, reply_faults=None, foreign=None):
        self.inner = inner
        self.rng = rng
        self.faults = dict(DEFAULT_FAULTS if faults is None else faults)
        self.reply_faults = dict(DEFAULT_REPLY_FAULTS if reply_faults is None else reply_faults)
        if sum(self.faults.values()) > 1 or sum(self.reply_faults.values()) > 1:
            raise ValueError("fault probabilities add up to more than 1")
        self.foreign = foreign
        self.enabled = False
        self.frames = 0
        self.valid_frames = 0
        self.faults_by_kind: Counter = Counter()
        self.history: deque[bytes] = deque(maxlen=200)
        self.interrupt_after: int | None = None

    # ---------------------------------------------------------------- to the device

    def _out(self, data: bytes) -> None:
        self.frames += 1
        self.inner.write(data)

    def _pick(self, table: dict) -> str | None:
        r = self.rng.random()
        for kind, probability in table.items():
            if r < probability:
                return kind
            r -= probability
        return None

    def write(self, data: bytes) -> None:
        """Send the driver's frames to the device, some of them damaged, dropped or joined by
        others (`faults`)."""
        for frame in split_frames(data):
            if self.interrupt_after is not None:
                if self.interrupt_after <= 0:
                    self.interrupt_after = None
                    raise HostInterrupt("the host stopped part-way")
                self.interrupt_after -= 1
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        kind = self._pick(self.faults) if self.enabled else None
        if kind is None:
            self.valid_frames += 1
            self._out(frame)
        else:
            getattr(self, "_" + kind)(frame)
        self.history.append(frame)

    def _count(self, kind: str) -> None:
        self.faults_by_kind[kind] += 1

    def _bit_flip(self, frame):
        fields = _fields(frame)
        name = self.rng.choice([f for f in BIT_FIELDS if len(fields[f])])
        damaged = bytearray(frame)
        damaged[self.rng.choice(fields[name])] ^= 1 << self.rng.randrange(8)
        self._count(f"bit_flip:{name}")
        self._out(bytes(damaged))

    def _truncate(self, frame):
        self._count("truncate")
        self._out(frame[:self.rng.randrange(1, len(frame))])

    def _duplicate(self, frame):
        self._count("duplicate")
        self._out(frame)
        self._out(frame)

    def _drop(self, frame):
        self._count("drop")

    def _junk(self, frame):
        junk = bytes(wire.MARKER if self.rng.random() < 0.2 else self.rng.randrange(256)
                     for _ in range(self.rng.randint(1, 40)))
        self._count("junk")
        self._out(junk)
        self._out(frame)

    def _unknown_type(self, frame):
        known = {v for k, v in vars(wire.Type).items() if k.isupper() and isinstance(v, int)}
        type_ = self.rng.choice([t for t in range(0x00, 0x80) if t not in known])
        seq = frame[2] if self.rng.random() < 0.5 else self.rng.randrange(256)
        payload = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(0, 8)))
        self._count("unknown_type")
        self._out(wire.encode(type_, seq, payload))
        self._out(frame)

    def _replay(self, frame):
        if not self.history:
            return self._duplicate(frame)
        self._count("replay")
        self._out(self.rng.choice(self.history))
        self._out(frame)

    def _wrong_length(self, frame):
        header, trailer = wire.HEADER, wire.TRAILER
        payload = frame[header:len(frame) - trailer]
        change = self.rng.choice((-3, -2, -1, 1, 2, 3))
        payload = payload[:max(0, len(payload) + change)] + bytes(
            self.rng.randrange(256) for _ in range(max(0, change)))
        self._count("wrong_length")
        self._out(wire.encode(frame[1], frame[2], payload))

    def _future_seq(self, frame):
        self._count("future_seq")
        self._out(_reencode(frame, frame[2] + self.rng.randint(1, 30)))

    def _past_seq(self, frame):
        self._count("past_seq")
        self._out(_reencode(frame, frame[2] - self.rng.randint(1, 40)))

    def _foreign(self, frame):
        if self.foreign is None:
            return self._duplicate(frame)
        kind, data = self.foreign(frame[2])            # the driver's next sequence number
        self._count(f"foreign:{kind}")
        self._out(data)
        self._out(frame)

    # ---------------------------------------------------------------- from the device

    def read(self, timeout: float) -> bytes:
        """What the device sent, sometimes with a bit flipped or bytes dropped
        (`reply_faults`)."""
        data = self.inner.read(timeout)
        if not data or not self.enabled:
            return data
        kind = self._pick(self.reply_faults)
        if kind == "reply_bit_flip":
            damaged = bytearray(data)
            damaged[self.rng.randrange(len(damaged))] ^= 1 << self.rng.randrange(8)
            data = bytes(damaged)
        elif kind == "reply_drop_bytes":
            start = self.rng.randrange(len(data))
            data = data[:start] + data[start + self.rng.randint(1, 16):]
        if kind:
            self._count(kind)
        return data

    def close(self) -> None:
        """Close the transport underneath."""
        self.inner.close()


def _name(exc: BaseException) -> str:
    """An exception's class for the counts: the driver's by name, others with their module."""
    kind = type(exc)
    if kind.__module__.startswith("cellsp.") or kind.__module__ == "builtins":
        return kind.__name__
    return f"{kind.__module__}.{kind.__name__}"


class HostInterrupt(BaseException):
    """The host stops in the middle of a driver call (like KeyboardInterrupt)."""


class Hang(BaseException):
    """A driver call ran past the campaign's bound."""


@contextmanager
def _watchdog(seconds: float):
    """Raise `Hang` in the body if it runs `seconds` (SIGALRM: main thread only; elsewhere the
    caller measures the call's time instead)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(signum, frame):
        raise Hang(f"no return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------- the campaign


class _Campaign:
    """One target's campaign (see `fuzz_target`)."""

    KEEP = 5        # descriptions kept of each kind of failure
    CONNECT_PAUSE = 1.5

    def __init__(self, driver_module, base_driver, geometry, frames, seed, timeout, retries,
                 faults, reply_faults, hang_seconds, sync_every, progress):
        self.dm = driver_module
        self.DeviceError = driver_module.DeviceError
        self.DeviceTimeout = driver_module.DeviceTimeout
        self.StateDiverged = getattr(driver_module, "StateDiverged", None) or type(
            "NoStateDiverged", (Exception,), {})   # protocol 1's driver (its comparison runs)
        self.geometry = geometry
        self.cfg = cfg = geometry.config
        self.target_frames = frames
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.hang_seconds = hang_seconds
        self.sync_every = sync_every
        self.progress = progress
        self.Type, self.encode, self.pack_bits = Type, encode, pack_bits
        self.layout = ProtocolLayout.for_geometry(geometry)
        self.transport = FaultyTransport(base_driver.transport, random.Random(seed + 1),
                                         faults, reply_faults, foreign=self._foreign)
        self.driver = driver_module.Driver(self.transport, geometry, timeout=timeout,
                                           retries=retries)
        self.golden = GoldenModel(cfg)
        self.golden.run(self._inputs(12), learn=True)     # a state with some history
        self.counts: Counter = Counter()
        self.errors: Counter = Counter()
        self.recovery_errors: Counter = Counter()
        self.first: dict[str, list[str]] = {"wrong_outputs": [], "undetected_differences": [],
                                            "hangs": [], "unexpected_errors": [],
                                            "recovery_failures": []}
        self.announced = False      # a divergence announced by the driver since the last check
        self.ops = 0
        self.aborted = None

    # ------------------------------------------------------------ helpers

    def _inputs(self, n: int) -> np.ndarray:
        density = self.rng.choice((0.2, 0.35, 0.5))
        return self.np_rng.random((n,) + tuple(self.cfg.input_shape)) < density

    def _foreign(self, seq: int):
        kind = self.rng.choices(FOREIGN_KINDS, FOREIGN_WEIGHTS)[0]
        T = self.Type
        if kind == "STEP":
            x = self._inputs(1)[0]
            learn = self.rng.random() < 0.5
            payload = bytes([1 if learn else 0]) + self.pack_bits(x)
            return f"STEP {'learn' if learn else 'infer'}", self.encode(T.STEP, seq, payload)
        if kind == "BATCH":
            steps = max(1, self.layout.batch_steps)
            X = self._inputs(self.rng.randint(1, steps))
            learn = self.rng.random() < 0.5
            payload = bytes([1 if learn else 0]) + b"".join(self.pack_bits(x) for x in X)
            return f"BATCH {'learn' if learn else 'infer'}", self.encode(T.BATCH, seq, payload)
        if kind == "READ_CHUNK":
            index = self.rng.randrange(self.layout.chunks)
            return kind, self.encode(T.READ_CHUNK, seq, struct.pack("<H", index))
        return kind, self.encode(getattr(T, kind), seq, b"")

    def _keep(self, what: str, text: str) -> None:
        if len(self.first[what]) < self.KEEP:
            self.first[what].append(f"op {self.ops}, frame {self.transport.frames}: {text}")

    def _call(self, fn, *args, **kwargs):
        """A driver call under the watchdog; a call that outlives it raises Hang."""
        t0 = time.monotonic()
        with _watchdog(self.hang_seconds):
            result = fn(*args, **kwargs)
        if time.monotonic() - t0 > self.hang_seconds:       # not in the main thread
            raise Hang(f"returned only after {time.monotonic() - t0:.0f} s")
        return result

    def _compare_outputs(self, what, got, want) -> None:
        """Count the inputs whose outputs differ; describe the first of this call."""
        got, want = np.asarray(got, bool), np.asarray(want, bool)
        bad = [t for t in range(len(want)) if not np.array_equal(got[t], want[t])]
        self.counts["wrong_outputs"] += len(bad)
        if bad:
            t = bad[0]
            cells = np.argwhere(got[t] != want[t])
            self._keep("wrong_outputs", f"{what}: {len(bad)} of {len(want)} inputs wrong, "
                       f"the first (input {t}) in {len(cells)} cells, e.g. "
                       f"{tuple(int(v) for v in cells[0])}: got {bool(got[t][tuple(cells[0])])}")

    # ------------------------------------------------------------ operations

    def op_run(self):
        X = self._inputs(self.rng.randint(2, 16))
        learn = self.rng.random() < 0.6
        try:
            active, cycles = self._call(self.driver.run, X, learn=learn, window=4)
        except self.DeviceError as exc:
            partial = getattr(exc, "partial", None)
            k = 0
            if partial is not None:
                k = len(partial[0])
                want = self.golden.run(X[:k], learn=learn) if k else np.zeros((0,))
                if k:
                    self._compare_outputs("run partial", partial[0], want)
            self.counts["valid_steps"] += k
            self.counts["partial_steps"] += k
            raise
        want = self.golden.run(X, learn=learn)
        self._compare_outputs("run", active, want)
        self.counts["valid_steps"] += len(X)
        self.counts["learning_steps" if learn else "inference_steps"] += len(X)

    def op_batch(self):
        """A run without its output maps (BATCH requests): the count of steps and the check
        of their maps against the golden model's, also for the steps applied before a
        failure (a wrong count or check counts as wrong outputs)."""
        if getattr(self.driver, "batch_steps", None) is None:    # an older protocol's driver
            return self.op_run()
        X = self._inputs(self.rng.randint(2, 40))
        learn = self.rng.random() < 0.6
        try:
            got = self._call(self.driver.run, X, learn=learn, outputs=False,
                             window=self.rng.choice((None, 8)))
        except self.DeviceError as exc:
            k, check = getattr(exc, "partial", None) or (0, 0)
            if k:
                self._compare_check("batch partial", (k, check),
                                    self.golden.run(X[:k], learn=learn))
            self.counts["valid_steps"] += k
            self.counts["partial_steps"] += k
            raise
        self._compare_check("batch", got, self.golden.run(X, learn=learn))
        self.counts["valid_steps"] += len(X)
        self.counts["batched_steps"] += len(X)
        self.counts["learning_steps" if learn else "inference_steps"] += len(X)

    def _compare_check(self, what, got, want) -> None:
        """A (steps, check) of `run(outputs=False)` against the golden model's maps `want`."""
        expect = (len(want), maps_check(want))
        if tuple(got) != expect:
            self.counts["wrong_outputs"] += max(1, len(want))
            self._keep("wrong_outputs", f"{what}: {got[0]} steps, check 0x{got[1]:08x}; the "
                       f"golden model: {expect[0]} steps, check 0x{expect[1]:08x}")

    def op_step(self):
        for _ in range(self.rng.randint(1, 3)):
            x = self._inputs(1)[0]
            learn = self.rng.random() < 0.6
            active, _ = self._call(self.driver.step, x, learn=learn)
            want = self.golden.step(x, learn=learn)
            self._compare_outputs("step", [active], [want])
            self.counts["valid_steps"] += 1
            self.counts["learning_steps" if learn else "inference_steps"] += 1

    def op_load(self):
        self.counts["loads"] += 1
        self.reload_needed = True                    # until it returns
        self._call(self.driver.load_state, self.golden.state())
        self.reload_needed = False

    def op_read(self):
        self.counts["read_backs"] += 1
        self.reload_needed = True
        state = self._call(self.driver.read_state)
        self.reload_needed = False
        diffs = state.differences(self.golden.state())
        if diffs:
            # the device's state, or a wrong read-back? read it again with faults off
            self.transport.enabled = False
            try:
                clean = self._call(self.driver.read_state)
            finally:
                self.transport.enabled = True
            if clean.differences(state):
                self.counts["wrong_outputs"] += 1   # a read-back returned without error
                self._keep("wrong_outputs", f"read_state under faults returned a state that a "
                           f"clean read-back does not: {clean.differences(state)[:3]}")
            self._recover("a read-back differing from the golden state")

    def op_interrupted(self):
        """A load or read-back the host abandons after a few frames."""
        load = self.rng.random() < 0.5
        self.counts["interrupted_loads" if load else "interrupted_read_backs"] += 1
        self.transport.interrupt_after = self.rng.randint(1, max(1, self.layout.chunks))
        self.reload_needed = True
        try:
            if load:
                self._call(self.driver.load_state, self.golden.state())
            else:
                self._call(self.driver.read_state)
            self.counts["interrupts_not_reached"] += 1      # finished before the cut
        except HostInterrupt:
            pass
        finally:
            self.transport.interrupt_after = None
        self._recover("interrupted", reload=True)

    def op_connect(self):
        info = self._call(self.driver.connect)
        if info.get("diverged"):
            self.announced = True
        if info.get("diverged") or info.get("busy"):
            self._recover("connect: diverged or busy", reload=True)

    OPS = (("run", 35), ("batch", 15), ("step", 20), ("load", 5), ("read", 5),
           ("interrupted", 4), ("connect", 3))

    # ------------------------------------------------------------ recovery and checks

    def _connect(self):
        """connect() with faults off, a few tries; the info dict, or None.

        From the third try on, each waits `CONNECT_PAUSE` s first: a frame cut off after a
        damaged length field holds the engine until its frame timeout (65,536 cycles, about
        0.65 s on an idle Verilator link, whose clock slows down when idle), and tries closer
        together than that only feed it bytes."""
        for attempt in range(5):
            if attempt >= 2:
                time.sleep(self.CONNECT_PAUSE)
            try:
                info = self._call(self.driver.connect)
                if attempt >= 2:
                    self.counts["connects_after_pause"] += 1
                return info
            except self.StateDiverged as exc:
                self.announced = True
                self.reload_needed = True
                self.recovery_errors[_name(exc)] += 1
            except Exception as exc:    # noqa: BLE001 - DeviceError, or a defect: counted
                self.recovery_errors[_name(exc)] += 1
                self.counts["connect_failures"] += 1
                if not isinstance(exc, self.DeviceError):
                    self.counts["unexpected_errors"] += 1
                    self._keep("unexpected_errors", f"connect: {_name(exc)}: {exc}")
        return None

    def _reload(self) -> None:
        """reset, load the golden state and check that it took (faults off)."""
        for _ in range(3):
            try:
                self._call(self.driver.reset)
                self._call(self.driver.load_state, self.golden.state())
                self.counts["reloads"] += 1
                self.reload_needed = False
                state = self._call(self.driver.read_state)
                diffs = state.differences(self.golden.state())
                if diffs:
                    self.counts["undetected_differences"] += 1
                    self._keep("undetected_differences",
                               f"load_state returned but the state read back differs: {diffs[:3]}")
                    continue
                self.announced = False
                return
            except self.DeviceError as exc:
                self.recovery_errors[_name(exc)] += 1
                if self._connect() is None:
                    break
        self._fail_recovery("reset and reload failed 3 times")

    def _sync(self, why: str) -> None:
        """Read the device's state (faults off) and compare it with the golden model's."""
        self.counts["syncs"] += 1
        try:
            state = self._call(self.driver.read_state)
        except self.DeviceError as exc:
            self.recovery_errors[_name(exc)] += 1
            self.counts["sync_read_errors"] += 1
            if isinstance(exc, self.StateDiverged):
                self.announced = True
            if self._connect() is None:
                return self._fail_recovery("connect failed after a failed read-back")
            return self._reload()
        diffs = state.differences(self.golden.state())
        if diffs:
            if self.announced:
                self.counts["announced_differences"] += 1
            else:
                self.counts["undetected_differences"] += 1
                self._keep("undetected_differences", f"{why}: {diffs[:3]}")
            return self._reload()
        self.announced = False

    def _fail_recovery(self, why: str) -> None:
        self.counts["recovery_failures"] += 1
        self._keep("recovery_failures", why)
        if self.counts["recovery_failures"] >= 5:
            self.aborted = f"recovery failed 5 times (last: {why})"

    def _look_before_reload(self) -> None:
        """An announced divergence: did the state really differ? (A false alarm is no failure,
        but counted.)"""
        try:
            state = self._call(self.driver.read_state)
        except self.DeviceError as exc:
            self.recovery_errors[_name(exc)] += 1
            return
        if state.differences(self.golden.state()):
            self.counts["announced_differences"] += 1
        else:
            self.counts["announced_without_difference"] += 1

    def _recover(self, why: str, reload: bool = False) -> None:
        """After an error: connect (faults off), then reload or check the state."""
        self.transport.enabled = False
        try:
            info = self._connect()
            if info is None:
                return self._fail_recovery(f"connect() failed 5 times after {why}")
            if info.get("diverged"):
                self.announced = True
                reload = True
            if info.get("busy"):
                self.counts["busy_reported"] += 1
                reload = True
            elif self.announced and not self.reload_needed:
                self._look_before_reload()
            if reload or self.reload_needed:
                self._reload()
            else:
                self._sync(f"after {why}")
        except Hang as exc:
            self.counts["hangs"] += 1
            self._keep("hangs", f"recovery after {why}: {exc}")
            self._fail_recovery(f"hang while recovering from {why}")
        except Exception as exc:        # noqa: BLE001 - counted, and recovery tried again
            self.recovery_errors[_name(exc)] += 1
            if not isinstance(exc, self.DeviceError):
                self.counts["unexpected_errors"] += 1
                self._keep("unexpected_errors", f"recovery: {_name(exc)}: {exc}")
            self._fail_recovery(f"{_name(exc)} while recovering from {why}: {exc}")
        finally:
            self.transport.enabled = True

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        names = [name for name, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        self.reload_needed = False
        self.transport.enabled = False
        self._call(self.driver.connect)
        self._reload()                    # the golden model's state, checked
        self.transport.enabled = True
        next_report = self.target_frames / 10
        while self.transport.frames < self.target_frames and not self.aborted:
            name = self.rng.choices(names, weights)[0]
            self.ops += 1
            self.counts[f"op:{name}"] += 1
            try:
                getattr(self, "op_" + name)()
            except self.DeviceError as exc:
                self.errors[_name(exc)] += 1
                if isinstance(exc, self.DeviceTimeout):
                    self.counts["device_timeouts"] += 1
                diverged = isinstance(exc, self.StateDiverged)
                if diverged:
                    self.announced = True
                self._recover(f"{name}: {_name(exc)}", reload=diverged)
            except Hang as exc:
                self.counts["hangs"] += 1
                self._keep("hangs", f"{name}: {exc}")
                self._recover(f"{name}: hang", reload=True)
            except HostInterrupt:      # the cut fell in a call that was not the interrupted op
                self.transport.interrupt_after = None
                self._recover(f"{name}: interrupted", reload=True)
            except Exception as exc:   # noqa: BLE001 - anything else is a defect: counted
                self.errors[_name(exc)] += 1
                self.counts["unexpected_errors"] += 1
                self._keep("unexpected_errors", f"{name}: {_name(exc)}: {exc}")
                self._recover(f"{name}: {_name(exc)}", reload=True)
            if self.ops % self.sync_every == 0 and not self.aborted:
                self._checked(self._sync, "periodic check")
            if self.progress and self.transport.frames >= next_report:
                next_report += self.target_frames / 10
                self.progress(self._status())
        if not self.aborted:
            self._checked(self._sync, "final check")
        self.transport.enabled = False

    def _checked(self, fn, why: str) -> None:
        """fn(why) with faults off; a hang or an error in it is counted and recovered from."""
        self.transport.enabled = False
        try:
            fn(why)
        except Hang as exc:
            self.counts["hangs"] += 1
            self._keep("hangs", f"{why}: {exc}")
            self._recover(f"{why}: hang", reload=True)
        except Exception as exc:        # noqa: BLE001 - counted, then recovered from
            self.recovery_errors[_name(exc)] += 1
            if not isinstance(exc, self.DeviceError):
                self.counts["unexpected_errors"] += 1
                self._keep("unexpected_errors", f"{why}: {_name(exc)}: {exc}")
            self._recover(f"{why}: {_name(exc)}", reload=True)
        finally:
            self.transport.enabled = True

    def _status(self) -> str:
        c = self.counts
        return (f"  {self.transport.frames:,} / {self.target_frames:,} frames, "
                f"{c['valid_steps']:,} valid steps, {sum(self.errors.values()):,} errors; "
                f"wrong outputs {c['wrong_outputs']}, undetected differences "
                f"{c['undetected_differences']}, hangs {c['hangs']}")


def _open(target: str, geometry, log):
    """(a connected driver on `target`, a close function)."""
    if target == "verilator":
        base = open_driver("verilator", geometry, log=log)
        return base, base.close
    if target == "pty":
        link = board_pty_link(geometry)
        path = link.open()
        try:
            base = open_driver(f"serial:{path}", geometry)
        except BaseException:
            link.close()
            raise

        def close():
            try:
                base.close()
            finally:
                link.close()
        return base, close
    raise ValueError(f"unknown fuzz target {target!r}: use verilator, pty or both")


#: the driver's reply timeout by target (seconds): a dropped frame costs one
TIMEOUTS = {"verilator": 0.2, "pty": 0.3}


def fuzz_target(target: str, geometry, frames: int, seed: int = 0, *,
                timeout: float | None = None,
                retries: int = 3, faults=None, reply_faults=None, hang_seconds: float = 60.0,
                sync_every: int = 20, progress=None, log=None) -> dict:
    """One campaign of `frames` frames on `target` ('verilator' or 'pty'); its figures."""
    timeout = TIMEOUTS.get(target, 0.5) if timeout is None else timeout
    t_open = time.perf_counter()
    base, close = _open(target, geometry, log)
    open_s = time.perf_counter() - t_open
    try:
        campaign = _Campaign(driver_module, base, geometry, frames, seed, timeout, retries,
                             faults, reply_faults, hang_seconds, sync_every, progress)
        t0 = time.perf_counter()
        campaign.run()
        seconds = time.perf_counter() - t0
    finally:
        close()
    c, t, d = campaign.counts, campaign.transport, campaign.driver
    cfg = geometry.config
    result = {
        "target": target,
        "config": f"{cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells, "
                  f"{cfg.input_shape[0]}x{cfg.input_shape[1]} input, "
                  f"{geometry.cells_per_pe} cells per PE",
        "protocol_version": wire.VERSION,
        "seed": seed, "driver_timeout_s": timeout, "driver_retries": retries,
        "frames": t.frames, "valid_frames": t.valid_frames,
        "faults": sum(t.faults_by_kind.values()),
        "faults_by_kind": dict(sorted(t.faults_by_kind.items())),
        "wrong_outputs": c["wrong_outputs"],
        "undetected_state_differences": c["undetected_differences"],
        "hangs": c["hangs"],
        "device_timeouts": c["device_timeouts"],
        "announced_state_differences": c["announced_differences"],
        "announced_without_difference": c["announced_without_difference"],
        "valid_steps": c["valid_steps"],
        "learning_steps": c["learning_steps"], "inference_steps": c["inference_steps"],
        "partial_run_steps": c["partial_steps"],
        "batched_steps": c["batched_steps"],
        "operations": campaign.ops,
        "operations_by_kind": {k[3:]: v for k, v in sorted(c.items()) if k.startswith("op:")},
        "loads": c["loads"], "read_backs": c["read_backs"],
        "interrupted_loads": c["interrupted_loads"],
        "interrupted_read_backs": c["interrupted_read_backs"],
        "busy_reported_on_connect": c["busy_reported"],
        "retries": getattr(d, "retried", None),
        "frames_ignored_by_driver": getattr(d, "ignored", None),
        "reply_bytes_dropped_by_decoder": getattr(getattr(d, "decoder", None), "dropped", None),
        "errors_by_class": dict(sorted(campaign.errors.items())),
        "recovery_errors_by_class": dict(sorted(campaign.recovery_errors.items())),
        "unexpected_errors": c["unexpected_errors"],
        "connect_failures": c["connect_failures"],
        "connects_after_pause": c["connects_after_pause"],
        "recovery_failures": c["recovery_failures"],
        "state_checks": c["syncs"], "reloads": c["reloads"],
        "wall_seconds": round(seconds, 1),
        "open_seconds (build or cache)": round(open_s, 1),
        "frames_per_s": round(t.frames / seconds, 1) if seconds else None,
        "aborted": campaign.aborted,
        "first": {k: v for k, v in campaign.first.items() if v},
    }
    result["pass"] = (result["wrong_outputs"] == result["undetected_state_differences"]
                      == result["hangs"] == 0 and not campaign.aborted
                      and t.frames >= frames)
    return result


def bench_fuzz(frames: int = 100_000, target: str = "verilator", seed: int = 0, config=None,
               progress=None, log=None, *, cells_per_pe: int | None = None, **options) -> dict:
    """The fuzz campaign of `frames` frames on 'verilator', 'pty' or 'both' (each gets
    `frames`). `config`: an SPConfig (default `FUZZ_CONFIG`, 8x8 cells) with `cells_per_pe`
    (default: a row of cells a PE); `options` go to `fuzz_target` (timeout, retries, faults,
    reply_faults, hang_seconds, sync_every). Passes when every target's wrong outputs,
    undetected state differences and hangs are 0."""
    if frames < 1:
        raise ValueError(f"bench fuzz needs at least 1 frame (got {frames})")
    targets = {"verilator": ["verilator"], "pty": ["pty"], "both": ["verilator", "pty"]}.get(target)
    if targets is None:
        raise ValueError(f"unknown fuzz target {target!r}: use verilator, pty or both")
    cfg = config if config is not None else FUZZ_CONFIG
    per_pe = cells_per_pe or cfg.cell_shape[1]
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=per_pe)
    results = []
    for name in targets:
        if log:
            log(f"{name}: {frames:,} frames, seed {seed}")
        row = fuzz_target(name, geometry, frames, seed, progress=progress, log=log, **options)
        results.append(row)
        if log:
            for line in summary_lines(row):
                log(line)
    return {"benchmark": "fuzz", "machine": machine_info(), "frames": frames, "seed": seed,
            "results": results, "pass": all(r["pass"] for r in results),
            "target": "0 wrong outputs, 0 undetected state differences, 0 hangs"}


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def summary_lines(row: dict) -> list[str]:
    """A target's figures, for people."""
    kinds = ", ".join(f"{k} {v}" for k, v in row["faults_by_kind"].items())
    errors = ", ".join(f"{k} {v}" for k, v in row["errors_by_class"].items()) or "none"
    reply = sum(v for k, v in row["faults_by_kind"].items() if k.startswith("reply_"))
    lines = [
        f"  {row['target']} ({row['config']}, protocol v{row['protocol_version']}): "
        f"{'PASS' if row['pass'] else 'FAIL'}",
        f"  wrong outputs {row['wrong_outputs']}, undetected state differences "
        f"{row['undetected_state_differences']}, hangs {row['hangs']} (all must be 0); "
        f"device timeouts {row['device_timeouts']}",
        f"  {row['frames']:,} frames ({row['valid_frames']:,} of the driver's intact; "
        f"{row['faults'] - reply:,} faults on requests, {reply:,} on replies) in "
        f"{row['wall_seconds']} s: {row['frames_per_s']} frames/s",
        f"  faults: {kinds}",
        f"  {row['valid_steps']:,} valid steps ({row['learning_steps']:,} learning, "
        f"{row['inference_steps']:,} inference, {row['batched_steps']:,} in BATCH requests, "
        f"{row['partial_run_steps']:,} from failed runs' partial results) in {row['operations']:,} operations; retries {_n(row['retries'])}, "
        f"frames ignored by the driver {_n(row['frames_ignored_by_driver'])}",
        f"  errors: {errors}; announced state differences "
        f"{row['announced_state_differences']} (and {row['announced_without_difference']} "
        f"announced with none), unexpected errors {row['unexpected_errors']}, "
        f"connect failures {row['connect_failures']} ({row['connects_after_pause']} connected "
        f"after a {_Campaign.CONNECT_PAUSE} s pause), recovery failures "
        f"{row['recovery_failures']}"]
    if row["aborted"]:
        lines.append(f"  ABORTED: {row['aborted']}")
    for what, items in row["first"].items():
        for item in items:
            lines.append(f"  {what}: {item}")
    return lines
