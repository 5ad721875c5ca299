"""The Amaranth cell array against the golden model, bit for bit, in Amaranth's simulator:
every active bit of every step and the whole state at the end of each run."""

import numpy as np
import pytest

from amaranth.hdl import Elaboratable, Fragment, Value

from cellsp.hdl.array import CellArray, CellArrayBase
from cellsp.hdl.parallel import ParallelCellArray, ParallelPE
from cellsp.hdl.pe import ProcessingElement
from cellsp.hdl.serial import SerialCellArray
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.compare import compare_run
from cellsp.sim.geometry import ArrayGeometry
from cellsp.host.array_run import Operation
from .configs import FAST_DUTY, NONSQUARE_CLIP, TINY_BOOSTED
from .hdl_checks import amaranth_sim, check_after_reload, check_against_golden

CASES = {
    "tiny-wrap-k2-boost": (TINY_BOOSTED, dict(input_width=6)),
    "nonsquare-clip-k1-boost": (NONSQUARE_CLIP, dict(input_width=8, lanes=3, idle=0.3, stall=0.3)),
    "clip-boost-off-narrow-perm": (SPConfig(input_shape=(5, 7), cell_shape=(2, 4), potential_radius=1,
                                            edge="clip", boost_strength=0.0, perm_bits=5,
                                            connected_threshold=10, init_spread=5, perm_inc=3,
                                            perm_dec=2, perm_bump=4, **FAST_DUTY),
                                   dict(input_width=5, lanes=3, idle=0.2)),
    "wrap-radius3-k2-stimulus5": (SPConfig(input_shape=(8, 8), cell_shape=(4, 4),
                                           potential_radius=3, potential_pct=0.5,
                                           boost_strength=6.0,
                                           **{**FAST_DUTY, "stimulus_threshold": 5}),
                        dict(input_width=16, lanes=4, stall=0.4)),
}
# the same configs with several cells per processing element (P = 1 above)
CASES.update({
    "tiny-wrap-pe3": (CASES["tiny-wrap-k2-boost"][0], dict(input_width=6, cells_per_pe=3)),
    "nonsquare-clip-pe5": (CASES["nonsquare-clip-k1-boost"][0],
                           dict(input_width=8, lanes=2, idle=0.3, stall=0.3, cells_per_pe=5)),
    "clip-boost-off-pe2": (CASES["clip-boost-off-narrow-perm"][0],
                           dict(input_width=5, lanes=3, cells_per_pe=2)),
    "wrap-radius3-pe4": (CASES["wrap-radius3-k2-stimulus5"][0],
                         dict(input_width=16, lanes=2, stall=0.2, cells_per_pe=4)),
    # PEs serving bands of whole rows: all 8 neighbours' duties read from ring positions
    "tiny-wrap-one-pe": (CASES["tiny-wrap-k2-boost"][0], dict(input_width=6, cells_per_pe=9)),
    "nonsquare-clip-one-pe": (CASES["nonsquare-clip-k1-boost"][0],
                              dict(input_width=8, idle=0.3, stall=0.3, cells_per_pe=15)),
    "wrap-radius3-two-row-pes": (CASES["wrap-radius3-k2-stimulus5"][0],
                                 dict(input_width=16, lanes=2, stall=0.2, cells_per_pe=8)),
    # runs of ring entries in memories (the longest run here: 5 entries)
    "nonsquare-clip-one-pe-ring-memory": (CASES["nonsquare-clip-k1-boost"][0],
                                          dict(input_width=8, stall=0.3, cells_per_pe=15,
                                               ring_memory_min=2)),
    "wrap-radius3-pe4-ring-memory": (CASES["wrap-radius3-k2-stimulus5"][0],
                                     dict(input_width=16, lanes=2, cells_per_pe=4,
                                          ring_memory_min=2)),
})
# the count-parallel array (hdl.parallel): every cell of a PE counted at once
CASES.update({f"{name}-parallel": (CASES[name][0], {**CASES[name][1], "parallel_count": True})
              for name in ("tiny-wrap-k2-boost", "tiny-wrap-pe3", "nonsquare-clip-pe5",
                           "clip-boost-off-pe2", "wrap-radius3-pe4", "nonsquare-clip-one-pe",
                           "wrap-radius3-two-row-pes")})

# the row-wide serial array: a window row a cycle, several boost thresholds a cycle
CASES.update({f"{name}-rows": (CASES[name][0], {**CASES[name][1], "row_scan": True})
              for name in ("tiny-wrap-k2-boost", "tiny-wrap-pe3", "nonsquare-clip-pe5",
                           "clip-boost-off-pe2", "wrap-radius3-k2-stimulus5",
                           "wrap-radius3-pe4", "nonsquare-clip-one-pe",
                           "wrap-radius3-pe4-ring-memory")})


def random_run(cfg, steps, seed, learn_p=0.7):
    rng = np.random.default_rng(seed)
    X = rng.random((steps,) + tuple(cfg.input_shape)) < 0.4
    flags = rng.random(steps) < learn_p
    pre = GoldenModel(cfg)
    pre.run(rng.random((30,) + tuple(cfg.input_shape)) < 0.4, learn=True)
    return X, flags, pre.state()


@pytest.mark.parametrize("name", list(CASES))
def test_array_matches_golden(name, tmp_path):
    cfg, hw = CASES[name]
    X, flags, initial = random_run(cfg, 16, seed=len(name))
    sim = amaranth_sim(cfg, seed=1, **hw)
    ops = ([Operation("load", state=initial)]
           + [Operation("step", x=x, learn=bool(f)) for x, f in zip(X, flags)]
           + [Operation("read")])
    res = check_against_golden(sim, ops, tmp_path)
    cycles = [r.cycles for r in res.steps]
    assert min(cycles) > 0


@pytest.mark.parametrize("cells_per_pe", [3, 18])
def test_weak_flag_from_each_cells_own_neighbourhood(tmp_path, cells_per_pe):
    """Overlap duties loaded so that consecutive cells of a PE differ in weakness: column 0 at
    the top, the rest at a quarter of it, so columns 1 and 5 (whose 3x3 neighbourhoods hold
    column 0) are weak and columns 2 to 4 are not. A weak flag taken from the cell served
    before (the neighbourhood registers read too early) bumps the wrong cells; random runs
    rarely make neighbours' maxima differ enough to show it."""
    cfg = SPConfig(input_shape=(6, 6), cell_shape=(3, 6), potential_radius=1, potential_pct=1.0,
                   stimulus_threshold=1, duty_period_log2=8, min_overlap_duty_pct=0.5,
                   perm_bump=30)
    golden = GoldenModel(cfg)
    state = golden.state()
    state.overlap_duty[...] = cfg.duty_one // 4
    state.overlap_duty[:, 0] = cfg.duty_one
    golden.set_state(state)
    rng = np.random.default_rng(0)
    X = rng.random((2,) + tuple(cfg.input_shape)) < 0.4
    golden.step(X[0], learn=True)
    assert golden.last["weak"][:, [1, 5]].all() and not golden.last["weak"][:, 2:5].any()
    sim = amaranth_sim(cfg, seed=1, input_width=6, cells_per_pe=cells_per_pe)
    check_against_golden(sim, [Operation("load", state=state),
                               Operation("step", x=X[0], learn=True),
                               Operation("step", x=X[1], learn=False), Operation("read")],
                         tmp_path)


def test_baked_initial_state_and_learning_off(tmp_path):
    """Without a load the memories hold the golden model's initial permanences."""
    cfg = CASES["tiny-wrap-k2-boost"][0]
    X, _, _ = random_run(cfg, 8, seed=5)
    sim = amaranth_sim(cfg, input_width=6)
    ops = [Operation("step", x=x, learn=False) for x in X] + [Operation("read")]
    check_against_golden(sim, ops, tmp_path)


@pytest.mark.parametrize("cells_per_pe", [1, 5])
def test_reset_mid_run_then_reload_behaves_as_fresh(cells_per_pe):
    cfg = CASES["nonsquare-clip-k1-boost"][0]
    X, _, initial = random_run(cfg, 10, seed=9)
    sim = amaranth_sim(cfg, input_width=8, lanes=3, cells_per_pe=cells_per_pe)
    # a few learning steps, a reset in the middle of the next step's pass (which writes the
    # previous step's learning: memories half written), then a fresh load
    window = cfg.window_size
    prefix = ([Operation("load", state=initial)]
              + [Operation("step", x=x, learn=True) for x in X[:3]]
              + [Operation("interrupt", x=X[0], learn=True,
                           ticks=cells_per_pe * window // 2)])
    rest = ([Operation("load", state=initial)]
            + [Operation("step", x=x, learn=True) for x in X[3:]] + [Operation("read")])
    check_after_reload(sim, prefix, rest, skipped_steps=3)


def test_step_mismatch_names_step_and_cell():
    a = np.zeros((2, 2, 3), bool)
    b = a.copy()
    b[1, 0, 2] = True
    assert compare_run(a, b).messages == ["step 1: cell (0, 2) active: golden 0, hardware 1"]


@pytest.mark.parametrize("parallel", [False, True])
def test_cell_array_builds_the_kind_its_geometry_asks_for(parallel):
    cfg = CASES["tiny-wrap-k2-boost"][0]
    geometry = ArrayGeometry.for_config(cfg, 6, cells_per_pe=3, parallel_count=parallel)
    array = CellArray(geometry)
    kind, pe_kind = (ParallelCellArray, ParallelPE) if parallel else \
        (SerialCellArray, ProcessingElement)
    assert type(array) is kind and isinstance(array, CellArrayBase)
    assert len(array.pes) == 3 and all(type(pe) is pe_kind for pe in array.pes)
    # for Verilog export the array holds only the PEs' ports: nothing left unelaborated
    exported = CellArray(geometry, pe_modules={q: (f"pe{q}", set()) for q in range(3)})
    assert type(exported) is kind
    assert not any(isinstance(pe, Elaboratable) for pe in exported.pes)

    def ports(pe):
        return [(path, member.flow, len(Value.cast(value))) for path, member, value
                in pe.signature.flatten(pe)]
    assert [ports(pe) for pe in exported.pes] == [ports(pe) for pe in array.pes]
    for built in (array, exported):           # both elaborate (the PEs' instances too)
        Fragment.get(built, None)
