"""The one comparison every HDL test makes, whichever simulator runs the array."""

import numpy as np
import pytest

from cellsp.sim.compare import golden_outputs, step_mismatches


def check_against_golden(sim, ops, tmp_path):
    """Run `ops` on `sim` (Amaranth or Verilator) and fail, naming step, cell and field, unless
    every active bit and the final read-back state equal the golden model's. On a failure the
    run is repeated with waveforms, and the VCD's path is in the message."""
    expected, final = golden_outputs(sim.config, ops)
    result = sim.run(ops)
    problems = [result.failure] if result.failure else []
    if not problems:
        got = np.array([r.active for r in result.steps]).reshape(expected.shape)
        problems = step_mismatches(expected, got)
        problems += [f"final state {d}" for d in final.differences(result.states[-1])]
    if problems:
        vcd = tmp_path / "failure.vcd"
        sim.run(ops, vcd=str(vcd))
        pytest.fail("hardware differs from the golden model:\n  " + "\n  ".join(problems)
                    + f"\nwaveforms: {vcd}")
    return result


def check_after_reload(sim, prefix, rest, skipped_steps):
    """Run prefix + rest (prefix ends in a reset of some kind, rest starts with a load) and
    check the steps of `rest` and the final state against the golden model run from `rest`."""
    result = sim.run(prefix + rest)
    expected, final = golden_outputs(sim.config, rest)
    got = np.array([r.active for r in result.steps[skipped_steps:]])
    assert step_mismatches(expected, got, first_step=skipped_steps) == []
    assert final.differences(result.states[-1]) == []
