"""SPConfig: defaults, (de)serialisation and errors that name the field and the limit."""

import json

import pytest

from cellsp.sim import ConfigError, SPConfig


def test_default_config_fields():
    cfg = SPConfig()
    for name in ("input_shape", "cell_shape", "potential_radius", "potential_pct", "edge",
                 "winners", "boost_strength", "seed"):
        assert hasattr(cfg, name)
    assert cfg == SPConfig.from_dict(cfg.to_dict())


def test_json_round_trip(tmp_path):
    cfg = SPConfig(cell_shape=(8, 12), edge="clip", winners=1, seed=5)
    path = tmp_path / "c.json"
    cfg.to_json(path)
    assert SPConfig.from_json(path) == cfg
    assert SPConfig.from_json(path.read_text()) == cfg
    assert json.loads(cfg.to_json())["cell_shape"] == [8, 12]


def test_partial_json_takes_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"cell_shape": [4, 4], "winners": 3}')
    cfg = SPConfig.from_json(path)
    assert cfg.cell_shape == (4, 4) and cfg.winners == 3 and cfg.seed == SPConfig().seed


@pytest.mark.parametrize("data, message", [
    ({"colour": 3}, r"unknown config field\(s\) \['colour'\]"),
    ({"winners": "2"}, r"winners: expected an integer in \[1, 9\]"),
    ({"winners": 12}, r"winners = 12 is outside the allowed range \[1, 9\] \(over by 3\)"),
    ({"winners": True}, r"winners: expected an integer"),
    ({"potential_pct": 0.0}, r"potential_pct = 0.0 is outside the allowed range \(0.0, 1.0\]"),
    ({"edge": "mirror"}, r"edge: expected one of"),
    ({"cell_shape": [2, 8]}, r"edge 'wrap' needs at least 3 cells"),
    ({"cell_shape": [0, 8], "edge": "clip"}, r"cell_shape = \(0, 8\).*\[1, 256\] \(short by 1\)"),
    ({"potential_radius": 9}, r"potential_radius = 9 .*\[0, 7\] \(over by 2\)"),
    ({"input_shape": [5, 16]}, r"window side 2r\+1 = 7 must not exceed the input side 5 \(by 2"),
    ({"connected_threshold": 300}, r"connected_threshold = 300 .*\[1, 255\] \(over by 45\)"),
    ({"init_spread": 200}, r"init_spread = 200: .*largest spread for this threshold is 128"),
    ({"boost_frac_bits": 8}, r"boost_frac_bits = 8 .*\[0, 7\]"),
    ({"duty_period_log2": 20}, r"duty_period_log2 = 20 .*\[0, 12\] \(over by 8\)"),
    ({"input_shape": "16x16"}, r"input_shape: expected two integers"),
    ({"boost_strength": float("nan")}, r"boost_strength"),
    ({"potential_pct": 0.01, "potential_radius": 1, "edge": "clip"}, r"no potential synapse"),
])
def test_bad_configs_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        SPConfig.from_dict(data)


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError):
        SPConfig(winners=0)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SPConfig.from_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        SPConfig.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        SPConfig.from_json(bad)


def test_derived_values():
    cfg = SPConfig()
    assert cfg.window_size == 49
    assert cfg.overlap_bits == 6
    assert cfg.boosted_bits == 10       # (49 * 255) >> 4 = 780
    assert cfg.duty_reg_bits == 13
    assert len(cfg.boost_table) == 2 ** (cfg.boost_index_bits + 1) + 1
    assert cfg.boost_table[len(cfg.boost_table) // 2] == cfg.boost_one
    assert cfg.hash == SPConfig().hash != SPConfig(seed=1).hash
