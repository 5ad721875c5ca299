"""The tests must be able to fail: each mutation below breaks one rule of SPEC.md in a copy of
cellsp.sim (the golden model) or cellsp.hdl (the cell array and the protocol engine), and the
tests that check that part must then fail."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
GOLDEN_TESTS = ("test_golden_spec.py", "test_golden_properties.py")
HDL_TESTS = ("test_array.py",)
PROTOCOL_TESTS = ("test_protocol.py",)
#: the protocol engine's files, whose mutations PROTOCOL_TESTS must catch
ENGINE_FILES = ("hdl/frames.py", "hdl/frame_receiver.py", "hdl/dispatcher.py", "hdl/replies.py",
                "hdl/protocol.py")

# (rule, file under sim/ or hdl/, original text, mutated text)
MUTATIONS = [
    ("tie-break to the higher index", "sim/golden.py",
     "self._tie = (n - 1 - np.arange(n))", "self._tie = (np.arange(n))"),
    ("boosted overlap rounds up", "sim/golden.py",
     "(overlap * self._boost) >> cfg.boost_frac_bits",
     "(overlap * self._boost + (1 << cfg.boost_frac_bits) - 1) >> cfg.boost_frac_bits"),
    ("k winners off by one", "sim/golden.py",
     "< self.config.winners)", "<= self.config.winners)"),
    ("boost index floors instead of rounding", "sim/golden.py",
     "+ (n << d)) // (n << (d + 1))", ") // (n << (d + 1))"),
    ("bump before learning", "sim/golden.py",
     "            self._learn(xin, active)\n            self._update_duty(active, overlap > 0)\n"
     "            self._update_boost()\n            self._bump_weak()",
     "            self._update_duty(active, overlap > 0)\n            self._update_boost()\n"
     "            self._bump_weak()\n            self._learn(xin, active)"),
    ("stimulus threshold inclusive", "sim/golden.py",
     "overlap[overlap < cfg.stimulus_threshold] = 0", "overlap[overlap <= cfg.stimulus_threshold] = 0"),
    ("duty period off by one", "sim/golden.py",
     "duty -= duty >> period", "duty -= duty >> (period + np.uint32(1))"),
    ("learning does not saturate at zero", "sim/golden.py",
     "np.maximum(perm, 0, out=perm)", "np.maximum(perm, -1000, out=perm)"),
    ("pool size rounds down", "sim/layout.py",
     "pool_sizes = (counts * cfg.potential_q + half) >> FRACTION_BITS",
     "pool_sizes = (counts * cfg.potential_q) >> FRACTION_BITS"),
    ("weak test not strict", "sim/golden.py",
     "weak = (duty << MIN_DUTY_FRAC_BITS) < largest", "weak = (duty << MIN_DUTY_FRAC_BITS) <= largest"),
    ("HDL: tie-break to the higher index", "hdl/array_base.py",
     "tuple(v is not None and v < c for v in nbs)", "tuple(v is not None and v > c for v in nbs)"),
    ("HDL: boost index floors", "hdl/pe.py",
     "need = (2 * k - 1) * m", "need = (2 * k) * m"),
    ("HDL: learning written to the wrong address", "hdl/serial.py",
     "[port.addr.eq(write_address), port.en.eq(-1)]",
     "[port.addr.eq(write_address + 1), port.en.eq(-1)]"),
    ("HDL: learning counted before it is applied", "hdl/pe.py",
     "perm_now = Mux(strobe(self.phase, Phase.APPLY), syn.perm_next, syn.perm)",
     "perm_now = syn.perm"),
    ("HDL: stimulus threshold ignored", "hdl/pe.py",
     "tail_ov = Mux(last < cfg.stimulus_threshold, 0, last)", "tail_ov = last"),
    ("HDL: a PE reads its neighbours' rings the wrong way round", "sim/geometry.py",
     "return other // p, (other % p - l) % p", "return other // p, (l - other % p) % p"),
    ("HDL: a band PE leaves a neighbour out of the duty sum", "hdl/pe.py",
     "offsets = [o for o in range(8) if not never[o]]",
     "offsets = [o for o in range(7) if not never[o]]"),
    ("HDL: a ring run in memory without the prefetch", "hdl/pe.py",
     "read.addr.eq(Mux(turn, after, at))", "read.addr.eq(at)"),
    ("HDL: the slot ends before its last count", "hdl/serial.py",
     "slot_end = Mux(applying, max(N + 2 + R, B + 1, tries + R) - 1, max(N + 2 + R, B + 1) - 1)",
     "slot_end = Mux(applying, max(N + 1 + R, B + 1, tries + R) - 1, max(N + 1 + R, B + 1) - 1)"),
    ("HDL: the slot uses the neighbourhood sum and maximum before they are registered",
     "hdl/pe.py", "NEIGHBOURHOOD_LATENCY = 1", "NEIGHBOURHOOD_LATENCY = 0"),
    ("HDL: odd cells walk the window forward", "hdl/serial.py",
     "odd = slot[0] if P > 1 else Const(0)", "odd = Const(0)"),
    ("HDL parallel: every cell searches the first neighbourhood size's thresholds",
     "hdl/parallel.py", "return Array(table)[which * entries + k] if len(self.sizes) > 1",
     "return Array(table)[k] if len(self.sizes) > 1"),
    ("HDL parallel: the boost search starts at a quarter", "hdl/parallel.py",
     "step_size = (entries - 1) >> 1", "step_size = (entries - 1) >> 2"),
    ("HDL parallel: weak cells bumped by their activity", "hdl/parallel.py",
     "Mux(pool & weak[l], Mux(bumped > top, top, bumped), learned)",
     "Mux(pool & act[l], Mux(bumped > top, top, bumped), learned)"),
    ("HDL parallel: learning counted before it is applied", "hdl/parallel.py",
     "perm_now = Mux(apply, syn.perm_next, perm)", "perm_now = perm"),
    ("HDL parallel: the scan stops a step early", "hdl/parallel.py",
     "with m.If(t == scan_end):", "with m.If(t == scan_end - 1):"),
    ("HDL parallel: the new boosts' pass stops a cell early", "hdl/parallel.py",
     "with m.If(applying & (t < P)):", "with m.If(applying & (t < P - 1)):"),
    ("HDL parallel: POST never updates the overlap duties (nor the weak flags' inputs)",
     "hdl/parallel.py",
     "                with m.If(on[ParallelPhase.DUTY]):\n                    m.d.sync += od[l]",
     "                with m.If(0):\n                    m.d.sync += od[l]"),
    ("protocol: an odd byte address reads the word's low byte", "hdl/frame_receiver.py",
     "self.buffer.byte.eq(read.data.word_select(high, 8))",
     "self.buffer.byte.eq(read.data[:8])"),
    ("protocol: the feed's first input byte is the flags byte", "hdl/dispatcher.py",
     "acc.eq(word[8:]), nacc.eq(8)", "acc.eq(word[:8]), nacc.eq(8)"),
    ("protocol: the engine skips the CRC check", "hdl/frame_receiver.py",
     "with m.Elif(Cat(crc_lo, byte) != crc.crc):", "with m.Elif(0):"),
    ("protocol: a replayed step is executed again", "hdl/dispatcher.py",
     "with m.Elif(new):\n                            executed(m)\n                            m.d.comb += [buffer.addr",
     "with m.Elif(new | requests.cached):\n                            executed(m)\n                            m.d.comb += [buffer.addr"),
    ("protocol: a step with a used seq and another check gets the cached reply",
     "hdl/dispatcher.py",
     "with m.If(requests.same_check):", "with m.If(1):"),
    ("protocol: an error about an unparsable frame names the frame's type and check",
     "hdl/dispatcher.py", "smalls=(frame.error, expected, MessageType.NONE), seq=0, anon=True)",
     "smalls=(frame.error, expected, rtype))"),
    ("protocol: a step's count of state changes leaves out its own learning", "hdl/replies.py",
     "m.d.comb += self.state_changed.eq(record.learn)", "m.d.comb += self.state_changed.eq(0)"),
    ("protocol: a cut-off frame is never dropped", "hdl/frame_receiver.py",
     "with m.Elif(idle_cycles == self.timeout):", "with m.Elif(0):"),
    ("protocol: the sender sends the newest packed reply, not the oldest", "hdl/replies.py",
     "self.sending.payload.eq((job_seq - unsent)[:8])",
     "self.sending.payload.eq((job_seq - 1)[:8])"),
]


@pytest.mark.parametrize("rule, filename, original, mutated", MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_tests_catch_mutation(tmp_path, rule, filename, original, mutated):
    package = filename.split("/")[0]
    copy = tmp_path / package
    shutil.copytree(ROOT / package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / filename
    source = target.read_text()
    assert source.count(original) == 1, f"mutation anchor for {rule!r} not found once"
    target.write_text(source.replace(original, mutated))
    env = dict(os.environ, CELLSP_OVERRIDE=f"{package}={copy}")
    tests = PROTOCOL_TESTS if filename in ENGINE_FILES else \
        HDL_TESTS if package == "hdl" or filename == "sim/geometry.py" else GOLDEN_TESTS
    only = ["-k", "parallel"] if filename == "hdl/parallel.py" else []
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *only,
         *(str(TESTS / t) for t in tests)],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, f"mutation {rule!r} survived:\n{result.stdout[-2000:]}"
