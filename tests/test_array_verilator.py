"""The cell array in Verilator (cocotb test bench) against the golden model, bit for bit.

Each configuration's model is built once (cached under $CELLSP_CACHE) and reused by every test
that needs it. The tiny array has one cell per processing element; the non-square one 5 (a
whole row per PE, also on the row-wide array), the 8x16 one 8 (and 16, a row, on the
count-parallel array).
"""

import numpy as np
import pytest

from cellsp.boards.boards import get_board
from cellsp.sim import GoldenModel
from cellsp.sim.compare import golden_outputs
from cellsp.sim.geometry import ArrayGeometry
from cellsp.host.array_run import Operation
from cellsp.host import array_verilator
from cellsp.host.array_verilator import VerilatorArraySim
from .configs import HALF_SIXTEEN, NONSQUARE_CLIP
from .configs import TINY_BOOST_OFF as TINY  # boosting off here; on in the other two
from .hdl_checks import check_after_reload, check_against_golden


def random_inputs(cfg, steps, seed):
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.2, 0.4, size=(steps, 1, 1))
    return rng.random((steps,) + tuple(cfg.input_shape)) < density


@pytest.fixture(scope="module")
def tiny():
    sim = VerilatorArraySim(ArrayGeometry.for_config(TINY, input_width=6))
    sim.build()
    return sim


@pytest.fixture(scope="module")
def nonsquare():
    sim = VerilatorArraySim(ArrayGeometry.for_config(NONSQUARE_CLIP, input_width=8, lanes=2,
                                                     cells_per_pe=5),
                            idle=0.3, stall=0.3, seed=4)
    sim.build()
    return sim


@pytest.fixture(scope="module")
def icebreaker():
    """The iCEBreaker's default array: all its cells in one PE (a band of every row), the long
    runs of its rings in memories."""
    board = get_board("icebreaker")
    geometry = ArrayGeometry.for_config(board.default_config,
                                        cells_per_pe=board.default_cells_per_pe,
                                        ring_memory_min=board.ring_memory_min)
    sim = VerilatorArraySim(geometry, stall=0.1, seed=6)
    assert sim.geometry.num_pes == 1 and sim.geometry.ring_memory_min > 0
    sim.build()
    return sim


def sixteen_sim(seed, **hardware):
    """The 8x16 array with `hardware` (`ArrayGeometry.for_config` options), built."""
    sim = VerilatorArraySim(ArrayGeometry.for_config(HALF_SIXTEEN, **hardware), idle=0.1,
                            stall=0.1, seed=seed)
    sim.build()
    return sim


@pytest.fixture(scope="module")
def sixteen():
    return sixteen_sim(2, cells_per_pe=8)


@pytest.mark.parametrize("learn", [True, False])
def test_tiny_wrap_k2_boost_off(tiny, tmp_path, learn):
    X = random_inputs(TINY, 60, seed=1)
    ops = [Operation("step", x=x, learn=learn) for x in X] + [Operation("read")]
    check_against_golden(tiny, ops, tmp_path)


def test_nonsquare_clip_k1_with_idle_and_back_pressure(nonsquare, tmp_path):
    X = random_inputs(NONSQUARE_CLIP, 80, seed=2)
    flags = np.random.default_rng(3).random(80) < 0.7
    ops = [Operation("step", x=x, learn=bool(f)) for x, f in zip(X, flags)] + [Operation("read")]
    check_against_golden(nonsquare, ops, tmp_path)


def test_reset_mid_run_then_reload(nonsquare):
    X = random_inputs(NONSQUARE_CLIP, 20, seed=5)
    trained = GoldenModel(NONSQUARE_CLIP)
    trained.run(X, learn=True)
    state = trained.state()
    window = NONSQUARE_CLIP.window_size
    prefix = ([Operation("load", state=state)]
              + [Operation("step", x=x, learn=True) for x in X[:5]]
              + [Operation("interrupt", x=X[5], learn=True, ticks=5 * window // 2)])
    rest = ([Operation("load", state=state)]
            + [Operation("step", x=x, learn=True) for x in X[6:]] + [Operation("read")])
    check_after_reload(nonsquare, prefix, rest, skipped_steps=5)


@pytest.fixture(scope="module")
def sixteen_parallel():
    return sixteen_sim(3, cells_per_pe=16, parallel_count=True)


def test_8x16_learning_run(sixteen, tmp_path):
    """8x16 cells over a 16x16 input (pools of 60%, boosting on, 8 cells per PE): 250
    steps, learning on the first 200, from a loaded mid-training state, with idle and
    back-pressure."""
    learning_run(sixteen, tmp_path)


def test_8x16_count_parallel_learning_run(sixteen_parallel, tmp_path):
    """The same run on the count-parallel array (`hdl.parallel`), a row of 16 cells a PE."""
    learning_run(sixteen_parallel, tmp_path)


def test_nonsquare_clip_row_wide_with_idle_and_back_pressure(tmp_path):
    """The row-wide serial array (`ArrayGeometry.row_scan`, a window row a cycle) on the
    clipped non-square config, 5 cells a PE: 30 steps from a loaded state, the state read back
    in its own word order."""
    sim = VerilatorArraySim(ArrayGeometry.for_config(NONSQUARE_CLIP, input_width=8, lanes=2,
                                                     cells_per_pe=5, row_scan=True),
                            idle=0.3, stall=0.3, seed=5)
    X = random_inputs(NONSQUARE_CLIP, 40, seed=12)
    start = GoldenModel(NONSQUARE_CLIP)
    start.run(X[30:], learn=True)
    ops = ([Operation("load", state=start.state())]
           + [Operation("step", x=x, learn=t % 4 != 3) for t, x in enumerate(X[:30])]
           + [Operation("read")])
    check_against_golden(sim, ops, tmp_path)


def learning_run(sim, tmp_path):
    sixteen = sim
    X = random_inputs(HALF_SIXTEEN, 260, seed=7)
    start = GoldenModel(HALF_SIXTEEN)
    start.run(X[250:], learn=True)
    ops = ([Operation("load", state=start.state())]
           + [Operation("step", x=x, learn=t < 200) for t, x in enumerate(X[:250])]
           + [Operation("read")])
    result = check_against_golden(sixteen, ops, tmp_path)
    assert all(r.cycles > 0 for r in result.steps)


def test_comparison_can_fail(tiny, tmp_path):
    """A wrong expectation is caught and named (the bench compares, it does not just run)."""
    X = random_inputs(TINY, 10, seed=9)
    ops = [Operation("step", x=x, learn=True) for x in X]
    expected, _ = golden_outputs(TINY, ops)
    expected[6, 2, 1] ^= True
    result = tiny.run(ops, expected=expected)
    assert result.failure is not None and "step 6: cell (2, 1)" in result.failure


def test_icebreaker_band_pe_learning_run(icebreaker, tmp_path):
    """200 learning steps from a trained state, then 20 inference steps, then the state."""
    cfg = icebreaker.config
    X = random_inputs(cfg, 220, seed=8)
    trained = GoldenModel(cfg)
    trained.run(random_inputs(cfg, 30, seed=9), learn=True)
    ops = ([Operation("load", state=trained.state())]
           + [Operation("step", x=x, learn=t < 200) for t, x in enumerate(X)]
           + [Operation("read")])
    res = check_against_golden(icebreaker, ops, tmp_path)
    assert sum(r.active.sum() for r in res.steps) > 0


def test_the_model_key_names_the_cocotb_libraries_the_binary_loads(monkeypatch):
    """The model binary loads cocotb's libraries from the folder it was built against (its
    RUNPATH): a model built in another environment (another venv, since removed) must not be
    taken from the cache."""
    sim = VerilatorArraySim(ArrayGeometry.for_config(TINY))
    key = sim.model_key()
    monkeypatch.setattr(array_verilator, "cocotb_libs_dir", "/elsewhere/cocotb/libs")
    assert sim.model_key() != key
