"""The fuzz campaign (`cellsp bench fuzz`, host/bench_fuzz.py), small: a few thousand frames of
faults between the host driver and the real protocol engine, on the compiled Verilator model
and on the board gateware behind a pty, with a golden model shadowing the device. Wrong
outputs, undetected state differences and hangs must all be 0.

Also the fault injector itself (no model needed): what each kind of fault puts on the line.
The tiny config of tests/test_pty_link.py: each model builds once in 15-30 s on 2 cores."""

import random

import numpy as np
import pytest

from cellsp.sim.geometry import ArrayGeometry
from cellsp.host import bench_fuzz
from cellsp.host.bench_fuzz import FaultyTransport, HostInterrupt, fuzz_target, split_frames
from cellsp.sim.wire import MARKER, Type, encode, pack_bits

CFG = bench_fuzz.TEST_CONFIG
GEOMETRY = ArrayGeometry.for_config(CFG, input_width=6, cells_per_pe=3)


@pytest.mark.slow
@pytest.mark.parametrize("target, frames", [("verilator", 3000), ("pty", 1500)])
def test_fuzz_campaign_no_wrong_output_no_undetected_difference_no_hang(target, frames):
    row = fuzz_target(target, GEOMETRY, frames, seed=1, hang_seconds=60)
    report = "\n".join(bench_fuzz.summary_lines(row))
    assert row["frames"] >= frames and row["aborted"] is None, report
    assert row["valid_steps"] > frames // 10, report              # it did real work too
    assert row["batched_steps"] > 0, report                       # BATCH requests too
    assert sum(row["faults_by_kind"].values()) > frames // 20, report
    assert row["wrong_outputs"] == 0, report
    assert row["undetected_state_differences"] == 0, report
    assert row["hangs"] == 0, report


# ---------------------------------------------------------------------- the fault injector


class Sink:
    """A transport that records each write and returns queued replies."""

    def __init__(self, replies=b""):
        self.writes = []
        self.replies = replies

    def write(self, data):
        self.writes.append(bytes(data))

    def read(self, timeout):
        data, self.replies = self.replies, b""
        return data

    def close(self):
        pass


def step_frame(seq=7, learn=True):
    x = np.random.default_rng(seq).random(CFG.input_shape) < 0.4
    return encode(Type.STEP, seq, bytes([learn]) + pack_bits(x))


def only(kind, p=1.0):
    return {kind: p}


def test_split_frames_keeps_whole_frames_and_leftovers():
    a, b = step_frame(1), encode(Type.IDENTIFY, 2)
    assert split_frames(a + b) == [a, b]
    assert split_frames(a + b[:3]) == [a, b[:3]]
    assert split_frames(b"\x00\x01" + a) == [b"\x00\x01" + a]


def test_faults_off_passes_frames_through_and_counts_them():
    sink = Sink(b"reply")
    t = FaultyTransport(sink, random.Random(0), faults=only("drop"))
    t.write(step_frame(1) + step_frame(2))
    assert sink.writes == [step_frame(1), step_frame(2)]
    assert t.frames == t.valid_frames == 2 and not t.faults_by_kind
    assert t.read(0.1) == b"reply"


@pytest.mark.parametrize("field", bench_fuzz.BIT_FIELDS)
def test_a_bit_flip_lands_in_each_field(field):
    frame = step_frame()
    fields = bench_fuzz._fields(frame)
    seen = set()
    for seed in range(200):
        sink = Sink()
        t = FaultyTransport(sink, random.Random(seed), faults=only("bit_flip"))
        t.enabled = True
        t.write(frame)
        (sent,) = sink.writes
        diff = [i for i in range(len(frame)) if sent[i] != frame[i]]
        assert len(diff) == 1 and bin(sent[diff[0]] ^ frame[diff[0]]).count("1") == 1
        (kind,) = t.faults_by_kind
        name = kind.split(":")[1]
        assert diff[0] in fields[name]
        seen.add(name)
    assert field in seen


def test_each_fault_kind_puts_what_it_says_on_the_line():
    frame = step_frame(seq=9)
    sent = {}
    for kind in bench_fuzz.DEFAULT_FAULTS:
        sink = Sink()
        foreign = (lambda seq: ("RESET", encode(Type.RESET, seq)))
        t = FaultyTransport(sink, random.Random(1), faults=only(kind), foreign=foreign)
        t.history.append(encode(Type.IDENTIFY, 3))
        t.enabled = True
        t.write(frame)
        sent[kind] = sink.writes
        assert t.frames == len(sink.writes) and t.valid_frames == 0
        assert sum(t.faults_by_kind.values()) == 1
    assert sent["drop"] == []
    assert sent["duplicate"] == [frame, frame]
    assert len(sent["truncate"]) == 1 and frame.startswith(sent["truncate"][0])
    assert len(sent["truncate"][0]) < len(frame)
    assert sent["junk"][1] == frame and 1 <= len(sent["junk"][0]) <= 40
    assert sent["replay"] == [encode(Type.IDENTIFY, 3), frame]
    assert sent["foreign"] == [encode(Type.RESET, 9), frame]       # the driver's next seq
    unknown = sent["unknown_type"][0]
    assert sent["unknown_type"][1] == frame and unknown[0] == MARKER
    assert unknown[1] not in Type.names and unknown[1] < 0x80
    (resized,) = sent["wrong_length"]
    assert resized[:3] == frame[:3] and 1 <= abs(len(resized) - len(frame)) <= 3
    assert resized == encode(Type.STEP, 9, resized[5:-2])                # a good CRC
    for kind, sign in (("future_seq", 1), ("past_seq", -1)):
        (moved,) = sent[kind]
        delta = (moved[2] - frame[2]) % 256
        assert (1 <= delta <= 30) if sign > 0 else (216 <= delta <= 255)
        assert moved == encode(Type.STEP, moved[2], frame[5:-2])      # a good CRC


def test_reply_faults_damage_what_read_returns():
    reply = bytes(range(40))
    for kind in bench_fuzz.DEFAULT_REPLY_FAULTS:
        t = FaultyTransport(Sink(reply), random.Random(2), faults={}, reply_faults=only(kind))
        t.enabled = True
        got = t.read(0.1)
        assert got != reply and t.faults_by_kind[kind] == 1
        if kind == "reply_drop_bytes":
            assert len(got) < len(reply)
        else:
            assert len(got) == len(reply)


def test_interrupt_after_stops_the_host_part_way():
    sink = Sink()
    t = FaultyTransport(sink, random.Random(0), faults={})
    t.interrupt_after = 2
    t.write(step_frame(1))
    t.write(step_frame(2))
    with pytest.raises(HostInterrupt):
        t.write(step_frame(3))
    assert len(sink.writes) == 2 and t.interrupt_after is None
    t.write(step_frame(4))


def test_faults_are_deterministic_per_seed():
    def stream(seed):
        sink = Sink()
        t = FaultyTransport(sink, random.Random(seed),
                            foreign=lambda seq: ("IDENTIFY", encode(Type.IDENTIFY, seq)))
        t.enabled = True
        for seq in range(300):
            t.write(step_frame(seq % 256))
        return sink.writes, t.faults_by_kind

    assert stream(5) == stream(5)
    assert stream(5) != stream(6)
    writes, kinds = stream(5)
    assert sum(kinds.values()) > 10


def test_the_watchdog_turns_a_call_that_never_returns_into_a_hang():
    import time

    t0 = time.monotonic()
    with pytest.raises(bench_fuzz.Hang):
        with bench_fuzz._watchdog(0.2):
            time.sleep(5)
    assert time.monotonic() - t0 < 2
    with bench_fuzz._watchdog(0.5):          # a call within the bound: nothing happens
        time.sleep(0.05)
    time.sleep(0.6)                          # and the alarm is off afterwards


def test_cellsp_bench_fuzz_options():
    from cellsp.host.cli import build_parser

    args = build_parser().parse_args(["bench", "fuzz", "--frames", "500", "--target", "both",
                                      "--seed", "3"])
    assert (args.benchmark, args.frames, args.target, args.seed) == ("fuzz", 500, "both", 3)
    args = build_parser().parse_args(["bench", "fuzz"])
    assert (args.frames, args.target, args.seed) == (100_000, "verilator", 0)
