"""Property tests over random configs: the golden model against the literal reference
implementation of SPEC.md, and the invariants SPEC.md promises."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellsp.sim import GoldenModel, SPConfig
from .reference_sp import ReferenceSP

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw, max_cells=6):
    edge = draw(st.sampled_from(["wrap", "clip"]))
    lo = 3 if edge == "wrap" else 1
    h = draw(st.integers(lo, max_cells))
    w = draw(st.integers(lo, max_cells))
    r = draw(st.integers(0, 2))
    side = 2 * r + 1
    in_lo = side if edge == "wrap" else 1
    hin = draw(st.integers(in_lo, 10))
    win = draw(st.integers(in_lo, 10))
    perm_bits = draw(st.integers(3, 10))
    pmax = 2**perm_bits - 1
    thr = draw(st.integers(1, pmax))
    spread = draw(st.integers(1, min(thr, pmax - thr + 1)))
    duty_bits = draw(st.integers(2, 16))
    boost_bits = draw(st.integers(2, 10))
    kw = dict(
        input_shape=(hin, win), cell_shape=(h, w), potential_radius=r, edge=edge,
        potential_pct=draw(st.sampled_from([0.3, 0.5, 0.75, 1.0])),
        winners=draw(st.integers(1, 9)),
        boost_strength=draw(st.sampled_from([0.0, 0.5, 2.0, 6.0])),
        seed=draw(st.integers(0, 2**63 - 1)),
        perm_bits=perm_bits, connected_threshold=thr,
        perm_inc=draw(st.integers(0, pmax)), perm_dec=draw(st.integers(0, pmax)),
        perm_bump=draw(st.integers(0, pmax)), init_spread=spread,
        init_connected_pct=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9])),
        stimulus_threshold=draw(st.integers(0, 3)),
        boost_bits=boost_bits, boost_frac_bits=draw(st.integers(0, boost_bits - 1)),
        duty_bits=duty_bits, duty_period_log2=draw(st.integers(0, duty_bits)),
        boost_index_bits=draw(st.integers(0, min(4, duty_bits))),
        min_overlap_duty_pct=draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])),
    )
    try:
        return SPConfig(**kw)
    except ValueError:
        # e.g. a clip config whose corner pool rounds to zero: try another
        from hypothesis import assume
        assume(False)


def inputs(cfg, seed, steps):
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.1, 0.7)
    return (rng.random((steps,) + tuple(cfg.input_shape)) < density).astype(np.uint8)


@SETTINGS
@given(configs(), st.integers(0, 2**32 - 1))
def test_golden_equals_reference_implementation(cfg, seed):
    golden, ref = GoldenModel(cfg), ReferenceSP(cfg)
    n = cfg.num_cells
    assert golden.permanences.reshape(n, -1).tolist() == ref.perm
    X = inputs(cfg, seed, 12)
    for t, x in enumerate(X):
        learn = t % 4 != 3
        got = golden.step(x, learn=learn).ravel().tolist()
        want = ref.step(x.ravel().tolist(), learn)
        assert got == want, f"step {t}: active cells differ"
        assert golden.last["overlap"].ravel().tolist() == ref.last["overlap"]
        assert golden.last["boosted"].ravel().tolist() == ref.last["boosted"]
        assert golden.permanences.reshape(n, -1).tolist() == ref.perm, f"step {t}: permanences"
        assert golden.active_duty.ravel().tolist() == ref.active_duty
        assert golden.overlap_duty.ravel().tolist() == ref.overlap_duty
        assert golden.boost.ravel().tolist() == ref.boost


@SETTINGS
@given(configs(max_cells=8), st.integers(0, 2**32 - 1))
def test_inhibition_invariant(cfg, seed):
    """Active cells have fewer than k beating neighbours; inactive positive cells at least k."""
    model = GoldenModel(cfg)
    lay = model.layout
    for x in inputs(cfg, seed, 6):
        active = model.step(x, learn=True).ravel()
        bo = model.last["boosted"].ravel()
        for c in range(cfg.num_cells):
            nbs = [int(v) for v in lay.neighbour_index[:, c] if v < cfg.num_cells]
            beaten = sum(bo[v] > bo[c] or (bo[v] == bo[c] and v < c) for v in nbs)
            if active[c]:
                assert bo[c] > 0 and beaten < cfg.winners
            elif bo[c] > 0:
                assert beaten >= cfg.winners


@SETTINGS
@given(configs(), st.integers(0, 2**32 - 1))
def test_only_active_or_bumped_cells_change(cfg, seed):
    model = GoldenModel(cfg)
    for x in inputs(cfg, seed, 6):
        before = model.permanences.copy()
        active = model.step(x, learn=True)
        changed = (model.permanences != before).any(axis=2)
        assert not (changed & ~(active | model.last["weak"])).any()
        assert (model.permanences[~model.potential] == 0).all()


@SETTINGS
@given(configs(), st.integers(0, 2**32 - 1))
def test_no_learning_leaves_state_untouched(cfg, seed):
    model = GoldenModel(cfg)
    model.run(inputs(cfg, seed, 5), learn=True)
    before = model.state()
    model.run(inputs(cfg, seed + 1, 7), learn=False)
    model.step(inputs(cfg, seed + 2, 1)[0], learn=False)
    assert before.differences(model.state()) == []


@SETTINGS
@given(configs(), st.integers(0, 2**32 - 1))
def test_run_equals_repeated_step(cfg, seed):
    X = inputs(cfg, seed, 10)
    flags = np.random.default_rng(seed).random(10) < 0.5
    a, b = GoldenModel(cfg), GoldenModel(cfg)
    out = a.run(X, learn=flags)
    for t in range(10):
        assert (out[t] == b.step(X[t], learn=bool(flags[t]))).all(), f"step {t}"
    assert a.state().differences(b.state()) == []


@SETTINGS
@given(configs(), st.integers(0, 2**32 - 1))
def test_same_seed_same_run(cfg, seed):
    X = inputs(cfg, seed, 8)
    a, b = GoldenModel(cfg), GoldenModel(cfg)
    assert (a.run(X, learn=True) == b.run(X, learn=True)).all()
    assert a.state().differences(b.state()) == []


def test_different_seed_different_pools():
    a = GoldenModel(SPConfig(seed=1))
    b = GoldenModel(SPConfig(seed=2))
    assert (a.potential != b.potential).any()
    assert (a.permanences != b.permanences).any()


@settings(max_examples=15, deadline=None)
@given(cfg=configs(), seed=st.integers(0, 2**32 - 1))
def test_save_then_load_continues_identically(tmp_path_factory, cfg, seed):
    X = inputs(cfg, seed, 10)
    a = GoldenModel(cfg)
    a.run(X[:5], learn=True)
    path = tmp_path_factory.mktemp("state") / "s.npz"
    a.save(path)
    b = GoldenModel.load(path)
    assert b.config == cfg
    assert (a.run(X[5:], learn=True) == b.run(X[5:], learn=True)).all()
    assert a.state().differences(b.state()) == []


def test_batched_inference_uses_both_paths():
    """The dense (BLAS) and gathered inference paths agree with step()."""
    import cellsp.sim.golden as golden

    cfg = SPConfig(input_shape=(12, 12), cell_shape=(6, 6), potential_radius=2)
    X = inputs(cfg, 3, 30)
    model = GoldenModel(cfg)
    model.run(X, learn=True)
    stepwise = np.array([model.step(x, learn=False) for x in X])
    assert (model.infer(X) == stepwise).all()
    old = golden._DENSE_LIMIT
    golden._DENSE_LIMIT = 0
    try:
        assert (model.infer(X) == stepwise).all()
    finally:
        golden._DENSE_LIMIT = old
