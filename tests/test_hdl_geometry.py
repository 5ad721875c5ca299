"""The hardware layout: the scan visits every window slot once with one-step moves, the load
chain leaves the plane at scan step 0, and state words round-trip."""

import numpy as np
import pytest

from cellsp.hdl.geometry import ArrayGeometry, HardwareConfigError, Move
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.layout import layout

CONFIGS = [
    SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1),
    SPConfig(input_shape=(8, 10), cell_shape=(3, 5), potential_radius=2, edge="clip"),
    SPConfig(),
]


def rotate(plane, mv, hin, win):
    grid = plane.reshape(hin, win)
    dy, dx = {Move.NONE: (0, 0), Move.DX_PLUS: (0, 1), Move.DX_MINUS: (0, -1),
              Move.DY_PLUS: (1, 0)}[mv]
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


@pytest.mark.parametrize("lanes", [1, 3, 4, 9])
def test_state_words_round_trip(lanes):
    cfg = CONFIGS[1]
    g = ArrayGeometry(cfg, input_width=10, lanes=lanes)
    model = GoldenModel(cfg)
    model.run(np.random.default_rng(0).random((20,) + cfg.input_shape) < 0.4)
    words = g.state_to_words(model.state())
    assert len(words) == g.state_words
    assert max(words) < 2 ** g.state_word_bits
    assert model.state().differences(g.words_to_state(words)) == []


def test_bad_hardware_parameters_are_named():
    with pytest.raises(HardwareConfigError, match="input_width = 7 must divide the 256"):
        ArrayGeometry(SPConfig(), input_width=7)
    with pytest.raises(HardwareConfigError, match="lanes = 0"):
        ArrayGeometry(SPConfig(), lanes=0)
