"""The one comparison every HDL test makes, whichever simulator runs the array."""

import pytest

from cellsp.sim.compare import compare_run, golden_outputs
from cellsp.sim.geometry import ArrayGeometry
from cellsp.host.array_amaranth import AmaranthArraySim


def amaranth_sim(config, *, idle=0.0, stall=0.0, seed=0, **geometry):
    """The Amaranth runner of `config`'s array: `geometry` holds the hardware options of
    `ArrayGeometry.for_config` (input_width, lanes, cells_per_pe, ...), idle, stall and seed
    the run's pacing."""
    return AmaranthArraySim(ArrayGeometry.for_config(config, **geometry), idle=idle,
                            stall=stall, seed=seed)


def check_against_golden(sim, ops, tmp_path):
    """Run `ops` on `sim` (Amaranth or Verilator) and fail, naming step, cell and field, unless
    every active bit and the final read-back state equal the golden model's. On a failure the
    run is repeated with waveforms, and the VCD's path is in the message."""
    expected, final = golden_outputs(sim.config, ops)
    result = sim.run(ops)
    if result.failure:
        problem = result.failure
    else:
        mismatches = compare_run(expected, result.active_maps(), final, result.states[-1])
        problem = str(mismatches) if mismatches else None
    if problem:
        vcd = tmp_path / "failure.vcd"
        sim.run(ops, vcd=str(vcd))
        pytest.fail(f"{problem}\nwaveforms: {vcd}")
    return result


def check_after_reload(sim, prefix, rest, skipped_steps):
    """Run prefix + rest (prefix ends in a reset of some kind, rest starts with a load) and
    check the steps of `rest` and the final state against the golden model run from `rest`."""
    result = sim.run(prefix + rest)
    expected, final = golden_outputs(sim.config, rest)
    got = result.active_maps()[skipped_steps:]
    mismatches = compare_run(expected, got, final, result.states[-1], first_step=skipped_steps)
    assert not mismatches, str(mismatches)
