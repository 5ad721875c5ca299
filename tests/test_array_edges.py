"""The cell arrays at the edges of their rules, in Amaranth's simulator: the cycle count each
step reports, read exactly, and the golden model matched bit for bit in configs whose values
land on the boundaries (permanences saturating at 0 and perm_max, a stimulus threshold of 0,
one to three boost index bits, a duty period of two steps, sparse and empty inputs from the
initial state)."""

import numpy as np
import pytest

from cellsp.hdl.pe import ProcessingElement
from cellsp.host.array_run import Operation
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.geometry import ArrayGeometry
from .hdl_checks import amaranth_sim, check_against_golden

TINY = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, boost_strength=1.0,
                stimulus_threshold=1, duty_period_log2=2, min_overlap_duty_pct=0.5)


def first_step_cycles(g: ArrayGeometry) -> int:
    """SerialCellArray's and ParallelCellArray's docstrings: the input's beats, 1 cycle to
    take it, then P slots of max(N + 2 + R, B + 1) cycles, B for the last product, P to
    inhibit and 1 to publish (serial); or max(N + 1, P) to scan, 1 for the products, P to
    inhibit and 1 to publish (parallel). R: `ProcessingElement.NEIGHBOURHOOD_LATENCY`."""
    p, n, b = g.cells_per_pe, g.scan_steps, g.config.boost_bits
    if g.parallel_count:
        work = max(n + 1, p) + 1 + p + 1
    else:
        work = p * max(n + 2 + ProcessingElement.NEIGHBOURHOOD_LATENCY, b + 1) + b + p + 1
    return g.beats_per_input + 1 + work


@pytest.mark.parametrize("cells_per_pe, parallel", [(1, False), (3, False), (3, True)])
def test_the_first_step_after_a_load_reports_its_cycles_exactly(cells_per_pe, parallel):
    sim = amaranth_sim(TINY, input_width=6, cells_per_pe=cells_per_pe,
                       parallel_count=parallel)
    x = np.random.default_rng(0).random((6, 6)) < 0.4
    result = sim.run([Operation("load", state=GoldenModel(TINY).state()),
                      Operation("step", x=x, learn=True)])
    assert result.steps[0].cycles == first_step_cycles(sim.geometry) > 0


#: permanences of 4 bits (perm_max 15) with steps that overshoot both ends, a bump larger than
#: the increment, every overlap counting (stimulus threshold 0), one boost index bit
SATURATING = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, winners=2,
                      perm_bits=4, connected_threshold=8, perm_inc=5, perm_dec=3, perm_bump=6,
                      init_spread=4, stimulus_threshold=0, boost_strength=3.0,
                      boost_index_bits=0, duty_period_log2=1, min_overlap_duty_pct=0.5)
#: two boost index bits (a 9-entry table, its top entry within reach), one winner
BOOST_2 = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, winners=1,
                   perm_bits=5, connected_threshold=16, perm_inc=4, perm_dec=2, perm_bump=3,
                   init_spread=3, stimulus_threshold=2, boost_strength=2.0,
                   boost_index_bits=2, duty_period_log2=1, min_overlap_duty_pct=0.25)
CORNERS = {"saturating": SATURATING, "boost-index-2": BOOST_2}


def sparse_run(cfg, seed: int):
    """From the initial state: 3 empty inputs, 9 sparse (10% ones), then 12 at 50%, mostly
    learning."""
    rng = np.random.default_rng(seed)
    shape = tuple(cfg.input_shape)
    X = np.concatenate([np.zeros((3,) + shape, bool), rng.random((9,) + shape) < 0.1,
                        rng.random((12,) + shape) < 0.5])
    learn = rng.random(len(X)) < 0.8
    return [Operation("step", x=x, learn=bool(f)) for x, f in zip(X, learn)] + [
        Operation("read")]


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("name", list(CORNERS))
def test_corner_configs_match_golden_from_the_initial_state(name, parallel, tmp_path):
    cfg = CORNERS[name]
    sim = amaranth_sim(cfg, input_width=9, cells_per_pe=3, parallel_count=parallel)
    check_against_golden(sim, sparse_run(cfg, seed=len(name)), tmp_path)


def duty_lattice_run(cfg, seed: int):
    """The initial state with active duties drawn from eighths of one (or every value, for
    fewer duty bits; 30% zero), one learning step on a random input, one inference step; the
    seeds below put a cell's neighbourhood sum exactly on a boost threshold after the learning
    step."""
    rng = np.random.default_rng(seed)
    state = GoldenModel(cfg).state()
    shape = state.active_duty.shape
    unit = 1 << max(0, cfg.duty_bits - 3)
    zero = rng.random(shape) < 0.3
    drawn = rng.integers(0, (1 << cfg.duty_bits) // unit + 1, shape) * unit
    state.active_duty[...] = np.where(zero, 0, drawn)
    x = rng.random(tuple(cfg.input_shape)) < 0.3
    return [Operation("load", state=state), Operation("step", x=x, learn=True),
            Operation("step", x=rng.random(tuple(cfg.input_shape)) < 0.3, learn=False),
            Operation("read")]


#: two duty bits and two boost index bits: a 9-entry table over duties 0 .. 4
FINE = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, boost_strength=2.0,
                stimulus_threshold=1, duty_period_log2=1, duty_bits=2, boost_index_bits=2,
                winners=2)
#: (config, seed): after the learning step a cell's sum lies exactly on its boost table's top
#: threshold (no index bits, a clipped corner of 4 cells: reachable there), on the middle
#: thresholds (one index bit), one below a threshold that is rounded up (`FINE`: as many index
#: bits as duty bits, so with 9 cells the bound on 2S is odd), or on one of `FINE`'s
ON_THRESHOLD = {
    "top-entry": (SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                           edge="clip", boost_strength=2.0, stimulus_threshold=1,
                           duty_period_log2=1, boost_index_bits=0, winners=2), 153),
    "middle-entries": (SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                                boost_strength=2.0, stimulus_threshold=1, duty_period_log2=1,
                                boost_index_bits=1, winners=2), 1908),
    "rounded-up": (FINE, 1),
    "fine-entries": (FINE, 13),
}


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("name", list(ON_THRESHOLD))
def test_a_neighbourhood_sum_exactly_on_a_boost_threshold(name, parallel, tmp_path):
    cfg, seed = ON_THRESHOLD[name]
    sim = amaranth_sim(cfg, input_width=6, cells_per_pe=3, parallel_count=parallel)
    check_against_golden(sim, duty_lattice_run(cfg, seed), tmp_path)
