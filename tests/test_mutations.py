"""The golden-model tests must be able to fail: each mutation below breaks one rule of SPEC.md
in a copy of cellsp.sim, and the spec and property tests must then fail."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parent.parent / "sim"
TESTS = Path(__file__).resolve().parent

# (rule, file, original text, mutated text)
MUTATIONS = [
    ("tie-break to the higher index", "golden.py",
     "self._tie = (n - 1 - np.arange(n))", "self._tie = (np.arange(n))"),
    ("boosted overlap rounds up", "golden.py",
     "(overlap * self._boost) >> cfg.boost_frac_bits",
     "(overlap * self._boost + (1 << cfg.boost_frac_bits) - 1) >> cfg.boost_frac_bits"),
    ("k winners off by one", "golden.py",
     "< self.config.winners)", "<= self.config.winners)"),
    ("boost index floors instead of rounding", "golden.py",
     "+ (n << d)) // (n << (d + 1))", ") // (n << (d + 1))"),
    ("bump before learning", "golden.py",
     "            self._learn(xin, active)\n            self._update_duty(active, overlap > 0)\n"
     "            self._update_boost()\n            self._bump_weak()",
     "            self._update_duty(active, overlap > 0)\n            self._update_boost()\n"
     "            self._bump_weak()\n            self._learn(xin, active)"),
    ("stimulus threshold inclusive", "golden.py",
     "overlap[overlap < cfg.stimulus_threshold] = 0", "overlap[overlap <= cfg.stimulus_threshold] = 0"),
    ("duty period off by one", "golden.py",
     "duty -= duty >> period", "duty -= duty >> (period + np.uint32(1))"),
    ("learning does not saturate at zero", "golden.py",
     "np.maximum(perm, 0, out=perm)", "np.maximum(perm, -1000, out=perm)"),
    ("pool size rounds down", "layout.py",
     "pool_sizes = (counts * cfg.potential_q + half) >> FRACTION_BITS",
     "pool_sizes = (counts * cfg.potential_q) >> FRACTION_BITS"),
    ("weak test not strict", "golden.py",
     "weak = (duty << MIN_DUTY_FRAC_BITS) < largest", "weak = (duty << MIN_DUTY_FRAC_BITS) <= largest"),
]


@pytest.mark.parametrize("rule, filename, original, mutated", MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_tests_catch_mutation(tmp_path, rule, filename, original, mutated):
    copy = tmp_path / "sim"
    shutil.copytree(SIM, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / filename).read_text()
    assert source.count(original) == 1, f"mutation anchor for {rule!r} not found once"
    (copy / filename).write_text(source.replace(original, mutated))
    env = dict(os.environ, CELLSP_SIM_OVERRIDE=str(copy))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
         str(TESTS / "test_golden_spec.py"), str(TESTS / "test_golden_properties.py")],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, f"mutation {rule!r} survived:\n{result.stdout[-2000:]}"
