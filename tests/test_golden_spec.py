"""Hand-worked cases, one or more for every rule of SPEC.md. Each expected value below was
worked out by hand from the SPEC text, not by running the model."""

import math

import numpy as np
import pytest

from cellsp.sim import GoldenModel, SPConfig, SPState
from cellsp.sim.layout import cell_centres, layout
from cellsp.sim.rng import draw, mix64


def tiny(**changes):
    """A small clip-edged config whose pools are whole windows (potential_pct = 1)."""
    base = dict(input_shape=(4, 6), cell_shape=(1, 3), potential_radius=1, potential_pct=1.0,
                edge="clip", winners=1, boost_strength=0.0, stimulus_threshold=1,
                perm_bits=8, connected_threshold=128, perm_inc=12, perm_dec=4, perm_bump=8,
                duty_bits=4, duty_period_log2=0, boost_index_bits=2)
    base.update(changes)
    return SPConfig(**base)


def with_overlaps(cfg, overlaps, **state):
    """A model in which cell c has exactly overlaps[c] connected synapses (the first slots of its
    pool) and all other pool slots just below the threshold; feed it an all-ones input."""
    model = GoldenModel(cfg)
    s = model.state()
    n = cfg.num_cells
    pool = model.potential.reshape(n, -1)
    perm = np.zeros_like(pool, dtype=np.uint16)
    for c, ov in enumerate(np.ravel(overlaps)):
        slots = np.flatnonzero(pool[c])
        assert ov <= len(slots), "test asks for more overlap than the pool has"
        perm[c, slots] = cfg.connected_threshold - 1
        perm[c, slots[:ov]] = cfg.connected_threshold
    s.permanences = perm.reshape(s.permanences.shape)
    for name, value in state.items():
        setattr(s, name, np.asarray(value, dtype=getattr(s, name).dtype).reshape(cfg.cell_shape))
    model.set_state(s)
    return model


def ones(cfg):
    return np.ones(cfg.input_shape, np.uint8)


# ---------------------------------------------------------------- section 2: pools and draws

def test_mix64_is_splitmix64():
    # SplitMix64 from state 0: its first two outputs, as published with the algorithm.
    assert mix64(0) == 0xE220A8397B1DCDAF
    assert mix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    assert int(mix64(np.array([0], np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_draw_formula():
    seed, stream, c, p = 7, 2, 5, 3
    expected = mix64(mix64(mix64(seed) ^ stream) ^ (c * 2**16 + p))
    assert int(draw(seed, stream, np.array([c]), np.array([p]))[0]) == expected


def test_cell_centres():
    # ((2i+1) * n_in) // (2 n_cells)
    assert list(cell_centres(4, 8)) == [1, 3, 5, 7]
    assert list(cell_centres(3, 10)) == [1, 5, 8]
    assert list(cell_centres(1, 5)) == [2]


def test_clip_window_drops_out_of_range_slots():
    cfg = tiny(input_shape=(4, 4), cell_shape=(2, 2))
    lay = layout(cfg)
    # cell (1,1) is centred on input (3,3): window rows/cols 2..4, so 4 is out of range
    assert list(np.flatnonzero(lay.in_range[3])) == [0, 1, 3, 4]
    assert list(lay.input_index[3, [0, 1, 3, 4]]) == [2 * 4 + 2, 2 * 4 + 3, 3 * 4 + 2, 3 * 4 + 3]
    # potential_pct = 1: the pool is every in-range slot
    assert (lay.potential == lay.in_range).all()


def test_wrap_window_wraps_around():
    cfg = tiny(input_shape=(4, 4), cell_shape=(4, 4), edge="wrap")
    lay = layout(cfg)
    # cell (0,0) is centred on input (0,0): slot 0 reads input (-1,-1) = (3,3)
    assert lay.input_index[0, 0] == 3 * 4 + 3
    assert lay.in_range.all()


def test_pool_size_rounds_half_up():
    # 9 slots * 0.5 = 4.5 -> 5; 49 * 0.6 = 29.4 -> 29
    cfg = tiny(input_shape=(3, 3), cell_shape=(3, 3), edge="wrap", potential_pct=0.5)
    assert (layout(cfg).potential.sum(1) == 5).all()
    cfg = SPConfig(input_shape=(7, 7), cell_shape=(3, 3), potential_radius=3, potential_pct=0.6)
    assert (layout(cfg).potential.sum(1) == 29).all()


def test_pool_is_the_smallest_draws():
    cfg = tiny(input_shape=(5, 5), cell_shape=(3, 3), edge="wrap", potential_pct=0.5, seed=11)
    lay = layout(cfg)
    for c in range(cfg.num_cells):
        keys = [draw(cfg.seed, 1, np.array([c]), np.array([p]))[0] for p in range(9)]
        chosen = sorted(range(9), key=lambda p: (int(keys[p]), p))[:5]
        assert sorted(chosen) == list(np.flatnonzero(lay.potential[c]))


# ---------------------------------------------------------------- section 3: permanences

def test_initial_permanences_follow_the_draws():
    cfg = tiny(cell_shape=(1, 2), init_connected_pct=0.5, init_spread=10)
    model = GoldenModel(cfg)
    perm = model.permanences.reshape(2, -1)
    q = math.floor(0.5 * 2**16 + 0.5)
    for c in range(2):
        for p in np.flatnonzero(model.potential.reshape(2, -1)[c]):
            u = int(draw(cfg.seed, 2, np.array([c]), np.array([p]))[0])
            o = (u % 2**32) % 10
            want = 128 + o if (u >> 48) < q else 127 - o
            assert perm[c, p] == want


def test_non_potential_slots_hold_zero():
    cfg = tiny(input_shape=(4, 4), cell_shape=(2, 2))
    model = GoldenModel(cfg)
    assert (model.permanences[~model.potential] == 0).all()


def test_learning_saturates_and_skips_non_potential():
    cfg = tiny(cell_shape=(1, 1), input_shape=(3, 3))
    model = GoldenModel(cfg)
    s = model.state()
    perm = np.full(9, 128, np.uint16)
    perm[0] = 250   # active input, +12 saturates at 255
    perm[1] = 2     # inactive input, -4 saturates at 0
    s.permanences = perm.reshape(1, 1, 9)
    model.set_state(s)
    x = np.zeros((3, 3), np.uint8)
    x.flat[[0, 2, 3, 4]] = 1   # overlap 4 (slots 0, 2, 3, 4 connected... slot 0 at 250)
    assert model.step(x, learn=True)[0, 0]
    got = model.permanences.reshape(9)
    assert got[0] == 255 and got[1] == 0
    assert got[2] == 140 and got[5] == 124


# ---------------------------------------------------------------- section 4: overlaps

def test_stimulus_threshold_zeroes_small_overlaps():
    cfg = tiny(stimulus_threshold=3)
    model = with_overlaps(cfg, [2, 3, 4])
    model.step(ones(cfg), learn=False)
    assert list(model.last["overlap"].ravel()) == [0, 3, 4]


def test_boosted_overlap_is_a_floored_product():
    cfg = tiny(winners=3)
    # boost 24 = 1.5 (f = 4): 3 * 1.5 = 4.5 -> 4; boost 8 = 0.5: 1 * 0.5 -> 0
    model = with_overlaps(cfg, [3, 1, 2], boost=[24, 8, 16])
    active = model.step(ones(cfg), learn=False)
    assert list(model.last["boosted"].ravel()) == [4, 0, 2]
    # a zero boosted overlap is never active, whatever k
    assert list(active.ravel()) == [True, False, True]


# ---------------------------------------------------------------- section 5: inhibition

@pytest.mark.parametrize("winners, expected", [(1, [1, 0, 0]), (2, [1, 1, 1])])
def test_ties_go_to_the_lower_raster_index(winners, expected):
    cfg = tiny(winners=winners)
    model = with_overlaps(cfg, [2, 2, 2])
    assert list(model.step(ones(cfg), learn=False).ravel()) == [bool(e) for e in expected]


def test_larger_boosted_overlap_beats_lower_index():
    cfg = tiny()
    model = with_overlaps(cfg, [1, 2, 1])
    assert list(model.step(ones(cfg), learn=False).ravel()) == [False, True, False]


@pytest.mark.parametrize("edge, expected", [("wrap", {8}), ("clip", {0, 8})])
def test_wrap_and_clip_neighbourhoods(edge, expected):
    # 3x3 grid, cell 8 has the largest overlap, the rest tie. Under wrap every cell neighbours
    # cell 8, which wins alone; under clip cell 0 does not neighbour cell 8 and wins its tie.
    cfg = tiny(input_shape=(3, 3), cell_shape=(3, 3), edge=edge)
    model = with_overlaps(cfg, [1] * 8 + [2])
    assert set(np.flatnonzero(model.step(ones(cfg), learn=False))) == expected


def test_wrap_ties_compare_true_raster_indices():
    # 3x3 wrap, all equal: cell 0 neighbours everyone and beats all; with k=2 cell 1 (beaten by
    # cell 0 only) joins it.
    cfg = tiny(input_shape=(3, 3), cell_shape=(3, 3), edge="wrap", winners=2)
    model = with_overlaps(cfg, [1] * 9)
    assert set(np.flatnonzero(model.step(ones(cfg), learn=False))) == {0, 1}


def test_winners_nine_activates_every_positive_cell():
    cfg = tiny(input_shape=(3, 3), cell_shape=(3, 3), edge="wrap", winners=9)
    model = with_overlaps(cfg, [1, 0, 1, 1, 1, 1, 1, 1, 1])
    assert list(model.step(ones(cfg), learn=False).ravel()) == [1, 0, 1, 1, 1, 1, 1, 1, 1]


# ---------------------------------------------------------------- section 7: duty cycles

def test_duty_cycle_moving_average_sequence():
    # D = 4, P = 2: duty - (duty >> 2) + 4 on every hit, worked by hand
    cfg = tiny(cell_shape=(1, 1), input_shape=(3, 3), duty_bits=4, duty_period_log2=2)
    model = with_overlaps(cfg, [3])
    seen = []
    for _ in range(9):
        model.step(ones(cfg), learn=True)
        seen.append(int(model.active_duty[0, 0]))
    assert seen == [4, 7, 10, 12, 13, 14, 15, 16, 16]
    assert int(model.overlap_duty[0, 0]) == 16


def test_duty_cycle_decays_without_hits():
    cfg = tiny(cell_shape=(1, 1), input_shape=(3, 3), duty_bits=4, duty_period_log2=2)
    model = with_overlaps(cfg, [3], active_duty=[16], overlap_duty=[13])
    model.step(np.zeros((3, 3), np.uint8), learn=True)
    assert int(model.active_duty[0, 0]) == 12 and int(model.overlap_duty[0, 0]) == 10


# ---------------------------------------------------------------- section 8: boosting

def test_boost_table_values():
    cfg = tiny(boost_strength=math.log(2), boost_index_bits=0)
    assert cfg.boost_table == (8, 16, 32)       # 0.5, 1.0, 2.0 with f = 4
    assert set(tiny(boost_strength=0.0).boost_table) == {16}
    big = tiny(boost_strength=32.0, boost_index_bits=2)
    assert big.boost_table[0] == 1 and big.boost_table[-1] == 255   # clamped to [1, 2^8 - 1]


def test_boost_from_neighbourhood_mean_without_division():
    # P = 0, so this step's duties are 16 for the active cell 0 and 0 elsewhere.
    # cell 0: m=2, diff = 16 - 32 = -16 -> -0.5 * 4 = -2; cell 1: m=3, diff = 16 -> 1.33 -> 1;
    # cell 2: m=2, diff = 0 -> 0. table[i+4] = round(exp(i/4) * 16) = 10, 21, 16.
    cfg = tiny(boost_strength=1.0, boost_index_bits=2, duty_bits=4, duty_period_log2=0)
    model = with_overlaps(cfg, [2, 1, 0])
    model.step(ones(cfg), learn=True)
    assert list(model.active_duty.ravel()) == [16, 0, 0]
    assert list(model.boost.ravel()) == [10, 21, 16]


def test_boost_index_rounds_half_up():
    # 1x2 clip (m = 2 for both), D = 4, P = 4, no activity: duties [0, 4] stay [0, 4].
    # cell 0: diff = 4 -> (4/2)/16 * 4 = 0.5 -> 1 (table 21); cell 1: -0.5 -> 0 (table 16)
    cfg = tiny(cell_shape=(1, 2), boost_strength=1.0, boost_index_bits=2, duty_bits=4,
               duty_period_log2=4)
    model = with_overlaps(cfg, [0, 0], active_duty=[0, 4])
    model.step(np.zeros(cfg.input_shape, np.uint8), learn=True)
    assert list(model.active_duty.ravel()) == [0, 4]
    assert list(model.boost.ravel()) == [21, 16]


# ---------------------------------------------------------------- section 9: weak cells

def test_weak_cells_are_bumped():
    # P = 0: overlap duties become [16, 0, 0]. M = 512 (0.5). cell 1: 0 < 16*512 -> weak;
    # cell 2: its neighbourhood {1, 2} has max 0 -> not weak; cell 0 not weak.
    cfg = tiny(min_overlap_duty_pct=0.5, perm_bump=8)
    model = with_overlaps(cfg, [3, 0, 0])
    before = model.permanences.copy()
    x = np.zeros(cfg.input_shape, np.uint8)
    x[:, :2] = 1   # cell 0's window covers columns 0..2; cell 1's 2..4, cell 2's 4..5
    model.step(x, learn=True)
    assert list(model.last["weak"].ravel()) == [False, True, False]
    pool1 = model.potential[0, 1]
    assert (model.permanences[0, 1][pool1] == before[0, 1][pool1] + 8).all()
    assert (model.permanences[0, 2] == before[0, 2]).all()


def test_bump_comes_after_learning():
    # Cell 0 is active and weak in the same step. Its slot at 253 on an inactive input:
    # learn first: 253 - 4 = 249, bump: 257 -> 255.  (Bump first would give 255 - 4 = 251.)
    cfg = tiny(cell_shape=(1, 2), min_overlap_duty_pct=0.5, perm_bump=8, duty_bits=4,
               duty_period_log2=4)
    model = with_overlaps(cfg, [3, 0], overlap_duty=[0, 16])
    s = model.state()
    pool = np.flatnonzero(model.potential[0, 0])
    s.permanences[0, 0, pool[-1]] = 253
    model.set_state(s)
    x = np.zeros(cfg.input_shape, np.uint8)
    x.flat[model.layout.input_index[0, pool[:3]]] = 1   # the three connected slots see a 1
    assert model.step(x, learn=True)[0, 0]
    assert model.last["weak"][0, 0]
    assert model.permanences[0, 0, pool[-1]] == 255


# ---------------------------------------------------------------- section 6: order, no-learn

def test_overlap_uses_permanences_before_learning():
    cfg = tiny(cell_shape=(1, 1), input_shape=(3, 3), perm_dec=200, stimulus_threshold=1)
    model = with_overlaps(cfg, [2])
    model.step(ones(cfg), learn=True)
    # all inputs on: learning only increments; the overlap still counts the 2 connected slots
    assert model.last["overlap"][0, 0] == 2


def test_step_without_learning_changes_no_state():
    cfg = tiny(boost_strength=1.0)
    model = with_overlaps(cfg, [3, 1, 2], active_duty=[5, 9, 1], overlap_duty=[2, 2, 2])
    before = model.state()
    model.step(ones(cfg), learn=False)
    assert before.differences(model.state()) == []


# ---------------------------------------------------------------- section 10/12

def test_state_views_are_read_only():
    model = GoldenModel(tiny())
    with pytest.raises(ValueError):
        model.permanences[0, 0, 0] = 1


def test_set_state_rejects_foreign_permanences():
    cfg = tiny(input_shape=(4, 4), cell_shape=(2, 2))
    model = GoldenModel(cfg)
    s = model.state()
    s.permanences[~model.potential] = 5
    with pytest.raises(ValueError, match="outside the potential pool"):
        model.set_state(s)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 5), np.uint8), "shape"),
    (np.zeros((4, 6), np.float32), "dtype"),
    (np.full((4, 6), 2, np.int64), "not binary"),
    (np.zeros((1, 4, 6), np.uint8), "shape"),
])
def test_bad_inputs_raise_and_change_nothing(bad, message):
    model = GoldenModel(tiny())
    before = model.state()
    with pytest.raises(ValueError, match=message):
        model.step(bad, learn=True)
    assert before.differences(model.state()) == []


def test_learn_is_keyword_only_and_required():
    """Issue 18: `run(X)` learned by default while `Driver.run(X)` did not; now neither has a
    default and neither takes `learn` by position."""
    model, x = GoldenModel(tiny()), np.zeros((4, 6), np.uint8)
    for call in (lambda: model.step(x), lambda: model.step(x, True),
                 lambda: model.run(x[None]), lambda: model.run(x[None], False)):
        with pytest.raises(TypeError):
            call()
    assert model.step(x, learn=False).shape == (1, 3)


def test_a_non_binary_value_is_named_by_input_row_and_column():
    """Issue 18: the message gave a bare index (per input, from the driver) and a NumPy repr."""
    X = np.zeros((5, 4, 6), np.int64)
    X[3, 2, 1] = 7
    with pytest.raises(ValueError, match=r"the first 7 at input 3, row 2, column 1 "):
        GoldenModel(tiny()).run(X, learn=False)
    with pytest.raises(ValueError, match=r"the first 7 at row 2, column 1 "):
        GoldenModel(tiny()).step(X[3], learn=False)


def test_bad_batch_is_rejected():
    model = GoldenModel(tiny())
    with pytest.raises(ValueError, match="shape"):
        model.run(np.zeros((4, 6), np.uint8), learn=True)
    with pytest.raises(ValueError, match="learn"):
        model.run(np.zeros((3, 4, 6), np.uint8), learn=[True, False])


def test_state_differences_name_field_and_cell():
    model = GoldenModel(tiny())
    a, b = model.state(), model.state()
    b.boost[0, 2] += 1
    assert a.differences(b) == ["boost[0, 2]: 16 != 17"]
    assert isinstance(a, SPState)
