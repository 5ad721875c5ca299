"""Tests of the classic software SP (cellsp.sim.software_sp): sparsity, inhibition rule,
learning, determinism, purity of inference, input and parameter checks, from_config and the
htm.core adapter."""

import importlib.util
import math

import numpy as np
import pytest

from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.layout import initial_permanences, layout
from cellsp.sim.software_sp import HtmCoreSP, SoftwareSP

SMALL = dict(input_dimensions=(16, 16), column_dimensions=(12, 12), potential_radius=2,
             potential_pct=0.8, local_area_density=0.12, stimulus_threshold=1,
             syn_perm_connected=0.3, syn_perm_active_inc=0.05, syn_perm_inactive_dec=0.02,
             boost_strength=2.0, duty_cycle_period=50, seed=7)


def random_inputs(shape, t, density=0.2, seed=0):
    return np.random.default_rng(seed).random((t,) + tuple(shape)) < density


def state(sp):
    return {"permanences": sp.permanences, "potential": sp.potential,
            "active_duty": sp.active_duty_cycles, "overlap_duty": sp.overlap_duty_cycles,
            "min_overlap_duty": sp.min_overlap_duty_cycles, "boost": sp.boost_factors,
            "radius": sp.inhibition_radius, "iteration": sp.iteration}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def neighbourhood(c, shape, radius, wrap):
    """Raster indices of the columns within `radius` of column c (itself included)."""
    h, w = shape
    i, j = divmod(c, w)
    out = set()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            y, x = i + dy, j + dx
            if wrap:
                out.add((y % h) * w + x % w)
            elif 0 <= y < h and 0 <= x < w:
                out.add(y * w + x)
    return out


def reference_local(sp, overlap):
    """Local inhibition written column by column from the documented rule."""
    p = sp.params
    shape = sp.column_dimensions
    ov = np.where(overlap >= p["stimulus_threshold"], overlap, 0)
    boosted = ov * sp.boost_factors.reshape(-1)
    out = np.zeros(sp.num_columns, bool)
    for c in range(sp.num_columns):
        nbhd = neighbourhood(c, shape, sp.inhibition_radius, p["wrap_around"])
        k = math.floor(0.5 + p["local_area_density"] * len(nbhd))
        beaten = sum(1 for d in nbhd - {c}
                     if boosted[d] > boosted[c] or (boosted[d] == boosted[c] and d < c))
        out[c] = ov[c] > 0 and beaten < k
    return out


# ---------------------------------------------------------------------- sparsity and inhibition


def test_global_inhibition_selects_exactly_k():
    sp = SoftwareSP(**{**SMALL, "global_inhibition": True, "local_area_density": 0.05})
    k = int(0.05 * 144)
    X = random_inputs((16, 16), 40, density=0.3)
    learned = sp.run(X[:20], learn=True)
    inferred = sp.run(X[20:], learn=False)
    for out in (learned, inferred):
        np.testing.assert_array_equal(out.reshape(20, -1).sum(1), k)
    # with nothing to overlap no column may win, whatever the boost
    assert not sp.compute(np.zeros((16, 16), bool), learn=False).any()


def test_global_inhibition_picks_the_largest_boosted_overlaps():
    sp = SoftwareSP(**{**SMALL, "global_inhibition": True, "local_area_density": None,
                       "num_active_columns_per_inh_area": 9})
    sp.run(random_inputs((16, 16), 30, seed=1), learn=True)
    for x in random_inputs((16, 16), 20, seed=2):
        active = sp.compute(x, learn=False).reshape(-1)
        ov = sp.overlap(x).reshape(-1)
        ov = np.where(ov >= 1, ov, 0)
        boosted = ov * sp.boost_factors.reshape(-1)
        best = sorted(range(sp.num_columns), key=lambda c: (-boosted[c], c))[:9]
        want = np.zeros(sp.num_columns, bool)
        want[[c for c in best if ov[c] > 0]] = True
        np.testing.assert_array_equal(active, want)


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("radius", [None, 1, 3])
def test_local_inhibition_follows_the_rule(wrap, radius):
    sp = SoftwareSP(**{**SMALL, "column_dimensions": (9, 7), "wrap_around": wrap,
                       "inhibition_radius": radius, "local_area_density": 0.2})
    X = random_inputs((16, 16), 50, density=0.3, seed=3)
    sp.run(X[:25], learn=True)  # non-trivial boost factors
    assert not np.all(sp.boost_factors == 1.0)
    for x in X[25:]:
        active = sp.compute(x, learn=False).reshape(-1)
        np.testing.assert_array_equal(active, reference_local(sp, sp.overlap(x).reshape(-1)))


def test_local_ties_go_to_the_lower_index():
    # potential_pct 1 and everything connected: an all-ones input ties every column
    sp = SoftwareSP(input_dimensions=(10, 10), column_dimensions=(10, 10), potential_radius=1,
                    potential_pct=1.0, syn_perm_connected=0.0, local_area_density=1 / 9,
                    inhibition_radius=1, seed=0)
    active = sp.compute(np.ones((10, 10), bool), learn=False)
    assert np.all(sp.overlap(np.ones((10, 10), bool)) == 9)
    assert active[0, 0]  # the lowest raster index wins its neighbourhood
    np.testing.assert_array_equal(active.reshape(-1), reference_local(sp, np.full(100, 9)))


def test_local_density_near_target():
    sp = SoftwareSP(input_dimensions=(32, 32), column_dimensions=(32, 32), potential_radius=2,
                    potential_pct=0.8, local_area_density=0.1, stimulus_threshold=2,
                    syn_perm_connected=0.5, boost_strength=2.0, duty_cycle_period=100, seed=3)
    X = random_inputs((32, 32), 300, density=0.2, seed=4)
    learned = sp.run(X[:200], learn=True)
    inferred = sp.run(X[200:], learn=False)
    for out in (learned, inferred):
        assert abs(out.mean() - 0.1) < 0.03, out.mean()


# ---------------------------------------------------------------------- learning


def test_learning_step_adapts_active_columns_only():
    sp = SoftwareSP(**{**SMALL, "stimulus_threshold": 0, "boost_strength": 0.0})
    x = random_inputs((16, 16), 1, seed=5)[0]
    before = sp.permanences
    potential = sp.potential
    active = sp.compute(x, learn=True).reshape(-1)
    after = sp.permanences
    assert active.any()
    delta = np.where(x.reshape(-1)[None, :], 0.05, -0.02)
    want = np.where(active[:, None] & potential, np.clip(before + delta, 0, 1), before)
    np.testing.assert_allclose(after, want, atol=1e-12)
    assert np.all(after[~potential] == 0)
    assert sp.iteration == 1
    # first step: the duty-cycle period is 1, so duty cycles equal this step's activity
    np.testing.assert_array_equal(sp.active_duty_cycles.reshape(-1), active.astype(float))


@pytest.mark.parametrize("boost", [0.0, 2.0])
def test_learning_raises_overlap_of_a_repeated_pattern(boost):
    sp = SoftwareSP(**{**SMALL, "boost_strength": boost})
    x = random_inputs((16, 16), 1, density=0.25, seed=6)[0]
    on = x.reshape(-1)
    first = sp.compute(x, learn=False).reshape(-1)
    overlap0 = sp.overlap(x).reshape(-1)
    stray0 = (sp.connected & ~on).sum(1)  # connected synapses on inputs that are off
    reachable = (sp.potential & on).sum(1)
    assert np.all(overlap0[first] <= reachable[first])
    assert overlap0[first].sum() < reachable[first].sum()  # room to learn
    for _ in range(60):
        sp.compute(x, learn=True)
    last = sp.compute(x, learn=False).reshape(-1)
    overlap1 = sp.overlap(x).reshape(-1)
    stray1 = (sp.connected & ~on).sum(1)
    assert overlap1[first].mean() > overlap0[first].mean() + 1
    assert overlap1[last].mean() > overlap0[first].mean() + 1
    assert stray1[first].mean() < stray0[first].mean() - 1
    if boost == 0:
        # without boosting the same columns keep winning and connect every reachable input
        np.testing.assert_array_equal(last, first)
        np.testing.assert_array_equal(overlap1[first], reachable[first])


def test_raise_to_threshold_keeps_columns_able_to_fire():
    params = {**SMALL, "stimulus_threshold": 6, "syn_perm_connected": 0.9}
    sp = SoftwareSP(**params)
    counts = sp.connected.sum(1)
    assert counts.min() >= 6
    # without the rule many columns would start below the threshold (pools of about 20)
    assert sp.potential.sum(1).min() >= 6
    sp.run(random_inputs((16, 16), 20, seed=7), learn=True)
    active = sp.compute(random_inputs((16, 16), 1, seed=8)[0], learn=True).reshape(-1)
    assert sp.connected[active].sum(1).min() >= 6


def test_weak_columns_are_bumped():
    # only the top-left corner of the input is ever on: far columns never overlap
    params = {**SMALL, "global_inhibition": True, "local_area_density": 0.05,
              "min_pct_overlap_duty_cycles": 0.5, "update_period": 1,
              "syn_perm_below_stimulus_inc": 0.01, "wrap_around": False}
    sp = SoftwareSP(**params)
    x = np.zeros((16, 16), bool)
    x[:4, :4] = True
    sp.compute(x, learn=True)  # first update round sets the weak thresholds
    far = 6 * 12 + 6  # a middle column: its window misses the corner
    assert sp.overlap_duty_cycles.reshape(-1)[far] == 0
    before = sp.permanences[far]
    sp.compute(x, learn=True)
    after = sp.permanences[far]
    pot = sp.potential[far]
    np.testing.assert_allclose(after[pot], np.minimum(before[pot] + 0.01, 1.0))


def test_boost_follows_the_exponential_rule():
    sp = SoftwareSP(**{**SMALL, "global_inhibition": True, "local_area_density": 0.1,
                       "boost_strength": 3.0})
    sp.run(random_inputs((16, 16), 30, seed=9), learn=True)
    np.testing.assert_allclose(sp.boost_factors,
                               np.exp(3.0 * (0.1 - sp.active_duty_cycles)), rtol=1e-12)
    for wrap in (True, False):
        local = SoftwareSP(**{**SMALL, "inhibition_radius": 1, "wrap_around": wrap})
        local.run(random_inputs((16, 16), 30, seed=9), learn=True)
        duty = local.active_duty_cycles.reshape(-1)
        # target: mean duty over the 3x3 neighbourhood, fewer columns at a clipped border
        target = np.array([np.mean(duty[list(neighbourhood(c, (12, 12), 1, wrap))])
                           for c in range(144)])
        np.testing.assert_allclose(local.boost_factors.reshape(-1),
                                   np.exp(2.0 * (target - duty)), rtol=1e-9)


def test_duty_cycles_average_over_the_iterations_so_far():
    sp = SoftwareSP(**SMALL)
    X = random_inputs((16, 16), 3, seed=10)
    outs = [sp.compute(x, learn=True).astype(float) for x in X]
    np.testing.assert_allclose(sp.active_duty_cycles, sum(outs) / 3, atol=1e-12)


@pytest.mark.parametrize("radius, cols, expect", [(2, (32, 32), 2), (4, (16, 16), 2),
                                                    (6, (16, 16), 3)])
def test_adaptive_inhibition_radius(radius, cols, expect):
    # everything connected: the span is the window side 2r+1 (htm.core's rule then gives
    # round(max(1, ((2r+1) * columns_per_input - 1) / 2)))
    sp = SoftwareSP(input_dimensions=(32, 32), column_dimensions=cols, potential_radius=radius,
                    potential_pct=1.0, syn_perm_connected=0.0, local_area_density=0.1)
    assert sp.inhibition_radius == expect
    fixed = SoftwareSP(input_dimensions=(32, 32), column_dimensions=cols,
                       potential_radius=radius, inhibition_radius=5, local_area_density=0.1)
    assert fixed.inhibition_radius == 5
    fixed.run(random_inputs((32, 32), 60, seed=11), learn=True)
    assert fixed.inhibition_radius == 5


# ---------------------------------------------------------------------- determinism and purity


def test_same_seed_same_results_other_seed_differs():
    X = random_inputs((16, 16), 60, seed=12)
    a, b, c = SoftwareSP(**SMALL), SoftwareSP(**SMALL), SoftwareSP(**{**SMALL, "seed": 8})
    out_a, out_b, out_c = (sp.run(X, learn=True) for sp in (a, b, c))
    np.testing.assert_array_equal(out_a, out_b)
    assert_same_state(state(a), state(b))
    assert not np.array_equal(out_a, out_c)
    assert not np.array_equal(a.potential, c.potential)
    assert not np.array_equal(a.permanences, c.permanences)


def test_learn_false_changes_no_state():
    sp = SoftwareSP(**SMALL)
    X = random_inputs((16, 16), 30, seed=13)
    sp.run(X[:10], learn=True)
    before = state(sp)
    for x in X[10:]:
        sp.compute(x, learn=False)
    sp.run(X, learn=False)
    sp.overlap(X[0])
    assert_same_state(state(sp), before)


def test_run_equals_repeated_compute():
    X = random_inputs((16, 16), 40, seed=14)
    a, b = SoftwareSP(**SMALL), SoftwareSP(**SMALL)
    calls = []
    out = a.run(X[:20], learn=True, progress=calls.append)
    assert sum(calls) == 20
    np.testing.assert_array_equal(out, np.stack([b.compute(x, learn=True) for x in X[:20]]))
    calls.clear()
    inferred = a.run(X, learn=False, progress=calls.append)
    assert sum(calls) == 40
    np.testing.assert_array_equal(inferred, np.stack([a.compute(x, learn=False) for x in X]))
    assert inferred.shape == (40, 12, 12) and inferred.dtype == bool


def test_batched_inference_matches_for_clip_and_global():
    X = random_inputs((16, 16), 30, seed=15)
    for extra in ({"wrap_around": False}, {"global_inhibition": True}):
        sp = SoftwareSP(**{**SMALL, **extra})
        sp.run(X[:10], learn=True)
        np.testing.assert_array_equal(sp.run(X, learn=False),
                                      np.stack([sp.compute(x, learn=False) for x in X]))


# ---------------------------------------------------------------------- checks


def test_input_validation():
    sp = SoftwareSP(**SMALL)
    good = np.zeros((16, 16), np.uint8)
    assert sp.compute(good, learn=False).shape == (12, 12)
    with pytest.raises(ValueError, match="shape"):
        sp.compute(np.zeros((16, 15), bool), learn=False)
    with pytest.raises(ValueError, match="dtype"):
        sp.compute(np.zeros((16, 16), float), learn=False)
    bad = good.copy()
    bad[3, 4] = 2
    with pytest.raises(ValueError, match="not binary"):
        sp.compute(bad, learn=False)
    with pytest.raises(ValueError, match="shape"):
        sp.run(np.zeros((16, 16), bool), learn=False)
    with pytest.raises(ValueError, match="learn"):
        sp.compute(good, learn="yes")


def test_learn_is_keyword_only_and_required():
    """Issue 18: the same convention as GoldenModel and Driver (no default, by keyword)."""
    sp, x = SoftwareSP(**SMALL), np.zeros((16, 16), bool)
    for call in (lambda: sp.compute(x), lambda: sp.compute(x, False), lambda: sp.run(x[None]),
                 lambda: sp.run(x[None], True)):
        with pytest.raises(TypeError):
            call()
    for name in ("compute", "run"):
        import inspect

        assert inspect.signature(getattr(HtmCoreSP, name)).parameters["learn"].kind is \
            inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("name, value", [
    ("input_dimensions", (16,)), ("column_dimensions", (0, 4)), ("potential_radius", -1),
    ("potential_pct", 0.0), ("potential_pct", 1.5), ("global_inhibition", 1),
    ("local_area_density", 1.5), ("stimulus_threshold", -1), ("stimulus_threshold", 1.5),
    ("syn_perm_inactive_dec", -0.1), ("syn_perm_active_inc", 2.0), ("syn_perm_connected", 1.1),
    ("min_pct_overlap_duty_cycles", -0.5), ("duty_cycle_period", 0),
    ("boost_strength", -1.0), ("boost_strength", math.inf), ("seed", -3),
    ("wrap_around", "yes"), ("syn_perm_below_stimulus_inc", 3.0), ("update_period", 0),
    ("inhibition_radius", 0),
])
def test_parameter_validation_names_the_parameter(name, value):
    with pytest.raises(ValueError, match=name):
        SoftwareSP(**{**SMALL, name: value})


def test_sparsity_needs_exactly_one_setting():
    with pytest.raises(ValueError, match="exactly one"):
        SoftwareSP(**{**SMALL, "num_active_columns_per_inh_area": 5})
    with pytest.raises(ValueError, match="exactly one"):
        SoftwareSP(**{**SMALL, "local_area_density": 0, "num_active_columns_per_inh_area": 0})
    with pytest.raises(ValueError, match="inhibition_radius"):
        SoftwareSP(**{**SMALL, "global_inhibition": True, "inhibition_radius": 2})
    sp = SoftwareSP(**{**SMALL, "local_area_density": -1, "num_active_columns_per_inh_area": 5})
    assert sp.params["num_active_columns_per_inh_area"] == 5


# ---------------------------------------------------------------------- from_config


def scaled_golden(cfg):
    lay = layout(cfg)
    perm = initial_permanences(cfg, lay.potential)
    dense_perm = np.zeros((cfg.num_cells, cfg.num_inputs))
    dense_pot = np.zeros((cfg.num_cells, cfg.num_inputs), bool)
    cell, slot = np.nonzero(lay.potential)
    dense_perm[cell, lay.input_index[cell, slot]] = perm[cell, slot] / cfg.perm_max
    dense_pot[cell, lay.input_index[cell, slot]] = True
    return dense_pot, dense_perm


@pytest.mark.parametrize("cfg", [
    SPConfig(),
    SPConfig(edge="clip", input_shape=(20, 17), cell_shape=(9, 11), potential_radius=2,
             winners=3, seed=5),
])
def test_from_config_starts_from_the_golden_synapses(cfg):
    sp = SoftwareSP.from_config(cfg)
    assert sp.input_dimensions == cfg.input_shape
    assert sp.column_dimensions == cfg.cell_shape
    pot, perm = scaled_golden(cfg)
    np.testing.assert_array_equal(sp.potential, pot)
    np.testing.assert_array_equal(sp.permanences, perm)
    p = sp.params
    assert p["wrap_around"] == (cfg.edge == "wrap")
    assert not p["global_inhibition"] and sp.inhibition_radius == 1
    assert p["local_area_density"] == cfg.winners / 9
    assert p["syn_perm_connected"] == cfg.connected_threshold / cfg.perm_max
    assert p["syn_perm_active_inc"] == cfg.perm_inc / cfg.perm_max
    assert p["syn_perm_inactive_dec"] == cfg.perm_dec / cfg.perm_max
    assert p["syn_perm_below_stimulus_inc"] == cfg.perm_bump / cfg.perm_max
    assert p["duty_cycle_period"] == 2 ** cfg.duty_period_log2
    assert p["stimulus_threshold"] == cfg.stimulus_threshold
    assert p["boost_strength"] == cfg.boost_strength
    assert p["min_pct_overlap_duty_cycles"] == cfg.min_overlap_duty_pct
    assert p["seed"] == cfg.seed
    # golden connected <=> permanence >= threshold must survive the scaling
    lay = layout(cfg)
    gold = initial_permanences(cfg, lay.potential)
    cell, slot = np.nonzero(lay.potential & (gold >= cfg.connected_threshold))
    want = np.zeros_like(pot)
    want[cell, lay.input_index[cell, slot]] = True
    np.testing.assert_array_equal(sp.connected, want)


def test_from_config_first_outputs_equal_the_golden_model():
    # same synapses, boost 1 and k = round(winners / 9 * 9) in every wrapped 3x3: identical
    cfg = SPConfig()
    sp = SoftwareSP.from_config(cfg)
    X = random_inputs(cfg.input_shape, 20, density=0.3, seed=16)
    np.testing.assert_array_equal(sp.run(X, learn=False), GoldenModel(cfg).run(X, learn=False))


def test_from_config_overrides():
    cfg = SPConfig()
    sp = SoftwareSP.from_config(cfg, update_period=1, inhibition_radius=2)
    assert sp.params["update_period"] == 1 and sp.inhibition_radius == 2
    glob = SoftwareSP.from_config(cfg, global_inhibition=True)
    assert glob.params["global_inhibition"]
    with pytest.raises(ValueError, match="potential_radius"):
        SoftwareSP.from_config(cfg, potential_radius=1)
    with pytest.raises(ValueError, match="config"):
        SoftwareSP.from_config({"input_shape": (16, 16)})


# ---------------------------------------------------------------------- htm.core adapter


@pytest.mark.skipif(importlib.util.find_spec("htm") is not None, reason="htm.core is installed")
def test_adapter_without_htm_core_says_so():
    with pytest.raises(ImportError, match="htm.core"):
        HtmCoreSP(**SMALL)


def test_adapter_with_htm_core():
    pytest.importorskip("htm.bindings.algorithms")
    params = {**SMALL, "global_inhibition": True, "local_area_density": 0.05}
    sp = HtmCoreSP(**params)
    X = random_inputs((16, 16), 20, seed=17)
    out = sp.run(X, learn=True)
    assert out.shape == (20, 12, 12) and out.dtype == bool
    assert np.all(out.reshape(20, -1).sum(1) <= int(0.05 * 144))
    again = HtmCoreSP(**params).run(X, learn=True)
    np.testing.assert_array_equal(out, again)
