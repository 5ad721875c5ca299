"""The hardware layout: the scan visits every window slot once with one-step moves, the load
chain leaves the plane at scan step 0, and state words round-trip."""

import numpy as np
import pytest

from cellsp.sim.geometry import ArrayGeometry, HardwareConfigError, Move
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.layout import layout
from .configs import TINY

CONFIGS = [
    TINY,
    SPConfig(input_shape=(8, 10), cell_shape=(3, 5), potential_radius=2, edge="clip"),
    SPConfig(),
]


def rotate(plane, mv, hin, win):
    grid = plane.reshape(hin, win)
    dy, dx = {Move.NONE: (0, 0), Move.DX_PLUS: (0, 1), Move.DX_MINUS: (0, -1),
              Move.DY_PLUS: (1, 0), Move.DY_MINUS: (-1, 0)}[mv]
    return np.roll(grid, (-dy, -dx), axis=(0, 1)).reshape(-1)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_scan_walks_every_tap_through_its_window(cfg):
    g = ArrayGeometry(cfg, input_width=cfg.input_shape[1])
    assert sorted(g.scan_slots) == list(range(cfg.window_size))
    lay = layout(cfg)
    hin, win = cfg.input_shape
    x = np.arange(cfg.num_inputs)             # each "bit" is its own index
    # load through the chain: beat b carries input bits b*w .. b*w + w - 1
    plane = np.full(cfg.num_inputs, -1)
    position_of = {g.chain_position(g.plane_start[r]): r for r in range(cfg.num_inputs)}
    for b in range(g.beats_per_input):
        beat = x[b * g.input_width:(b + 1) * g.input_width]
        new = plane.copy()
        for r in range(cfg.num_inputs):
            p = g.chain_position(g.plane_start[r])
            new[r] = beat[p] if p < g.input_width else plane[position_of[p - g.input_width]]
        plane = new
    assert (plane == np.array(g.plane_start)).all()
    for s in range(g.scan_steps):
        seen = plane[list(g.taps)]
        slot = g.scan_slots[s]
        in_range = lay.in_range[:, slot]
        assert (seen[in_range] == lay.input_index[in_range, slot]).all(), f"scan step {s}"
        plane = rotate(plane, g.scan_moves[s], hin, win)
    # the walk back (odd cells of a processing element) starts where the forward one ended
    for t in range(g.scan_steps):
        s = g.scan_steps - 1 - t
        seen = plane[list(g.taps)]
        in_range = lay.in_range[:, g.scan_slots[s]]
        assert (seen[in_range] == lay.input_index[in_range, g.scan_slots[s]]).all(), f"back {s}"
        plane = rotate(plane, g.scan_moves_reverse[t], hin, win)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_row_scan_walks_every_tap_row_through_its_window(cfg):
    """The row-wide array: at scan step s synapse b of every cell sees window slot (s, b),
    forward and back."""
    g = ArrayGeometry(cfg, input_width=cfg.input_shape[1], row_scan=True)
    side = cfg.window_side
    assert g.scan_steps == side and g.scan_width == side
    assert sorted(sum((g.step_slots(s) for s in range(side)), ())) == list(range(side * side))
    lay = layout(cfg)
    hin, win = cfg.input_shape
    plane = np.array(g.plane_start)
    order = list(range(side)) + list(range(side - 1, -1, -1))
    moves = list(g.scan_moves) + list(g.scan_moves_reverse)
    for s, mv in zip(order, moves):
        for b, slot in enumerate(g.step_slots(s)):
            seen = plane[[taps[b] for taps in g.row_taps]]
            in_range = lay.in_range[:, slot]
            assert (seen[in_range] == lay.input_index[in_range, slot]).all(), f"step {s}, {b}"
        plane = rotate(plane, mv, hin, win)
    assert (plane == np.array(g.plane_start)).all()


@pytest.mark.parametrize("lanes, cells_per_pe, row_scan",
                         [(1, 1, False), (3, 1, False), (4, 1, False), (9, 1, False),
                          (1, 5, False), (2, 5, False), (3, 5, False), (2, 5, True),
                          (3, 1, True)])
def test_state_words_round_trip(lanes, cells_per_pe, row_scan):
    cfg = CONFIGS[1]
    g = ArrayGeometry(cfg, input_width=10, lanes=lanes, cells_per_pe=cells_per_pe,
                      row_scan=row_scan)
    model = GoldenModel(cfg)
    model.run(np.random.default_rng(0).random((20,) + cfg.input_shape) < 0.4, learn=True)
    words = g.state_to_words(model.state())
    assert len(words) == g.state_words
    assert max(words) < 2 ** g.state_word_bits
    assert model.state().differences(g.words_to_state(words)) == []


def test_bad_hardware_parameters_are_named():
    with pytest.raises(HardwareConfigError, match="input_width = 7 must divide the 256"):
        ArrayGeometry(SPConfig(), input_width=7)
    with pytest.raises(HardwareConfigError, match="lanes = 0"):
        ArrayGeometry(SPConfig(), lanes=0)
    with pytest.raises(HardwareConfigError, match=r"cells_per_pe = 3 must divide the 32 cell "
                                                  r"columns or be a whole number of rows .* try "
                                                  r"\[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, "
                                                  r"1024\]"):
        ArrayGeometry(SPConfig(), cells_per_pe=3)
    with pytest.raises(HardwareConfigError, match=r"lanes = 200 must be in \[1, 128\]"):
        ArrayGeometry(SPConfig(), lanes=200, cells_per_pe=8)
    with pytest.raises(HardwareConfigError, match="row_scan is a kind of serial array"):
        ArrayGeometry(SPConfig(), row_scan=True, parallel_count=True)


def test_row_scan_state_words_come_in_another_order():
    """The same state gives the same number of words in both layouts, in another order: what
    IDENTIFY's layout digest guards."""
    cfg = CONFIGS[1]
    serial = ArrayGeometry(cfg, input_width=10, lanes=2, cells_per_pe=5)
    rows = ArrayGeometry(cfg, input_width=10, lanes=2, cells_per_pe=5, row_scan=True)
    model = GoldenModel(cfg)
    model.run(np.random.default_rng(1).random((10,) + cfg.input_shape) < 0.4, learn=True)
    a, b = serial.state_to_words(model.state()), rows.state_to_words(model.state())
    assert len(a) == len(b) and sorted(a) == sorted(b) and a != b
    assert rows.fields == 2 * cfg.window_side and rows.memory_depth == 5 * cfg.window_side


def test_processing_elements_hold_consecutive_cells_of_a_row():
    g = ArrayGeometry(CONFIGS[1], input_width=10, lanes=2, cells_per_pe=5)
    assert g.num_pes == 3 and g.memories == 2 and g.memory_depth == 5 * 25
    assert [g.pe_cells(q) for q in range(3)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9],
                                                 [10, 11, 12, 13, 14]]
    assert g.memory_pes(1) == [2]
    assert g.address_cell_slot(1, 2 * 25 + 3) == (7, g.scan_slots[3])


def test_a_state_of_another_config_is_refused_by_name():
    """Issue 18: loading another config's state said `cannot reshape array of size 50176`."""
    cfg = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1)
    g = ArrayGeometry.for_config(cfg, cells_per_pe=1)
    with pytest.raises(ValueError, match=r"permanences has shape \(32, 32, 49\).*another config"):
        g.state_to_words(GoldenModel(SPConfig()).state())
