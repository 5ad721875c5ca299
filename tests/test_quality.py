"""The SP quality benchmark (`cellsp bench quality`, `cellsp.sim.quality`): its figures in cases
whose answer is known, the means and spreads over seeds, the JSON and report it writes, and its
one-line errors. Tiny configs and few inputs only."""

import json
import os

import numpy as np
import pytest

from cellsp.host import bench_quality
from cellsp.host.cli import main
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim import quality
from cellsp.sim.config import ConfigError

#: 4x4 cells over an 8x8 input (digits at their own size), 3x3 pools
SMALL = SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=1)


class Frozen:
    """A golden model that never learns: `run` with learning on only infers."""

    def __init__(self, config):
        self.model = GoldenModel(config)

    def run(self, X, *, learn, progress=None):
        """The model's outputs for `X`, its state unchanged."""
        return self.model.run(X, learn=False)


def test_raw_input_noise_curve_is_exactly_the_bits_kept():
    task = quality.make_task("random-patterns", (20, 20), seed=0, limit=20, passes=2)
    figures = quality.measure(quality.RawInput(), task)
    # 40 active bits of 400: moving a fraction f of them keeps exactly 1 - f
    for f in quality.NOISE_CURVE:
        assert figures["noise_after"][str(f)] == pytest.approx(1.0 - f)
    assert figures["noise_before"] == figures["noise_after"]
    assert figures["late_change"] == 0.0
    assert figures["sparsity"] == pytest.approx(0.1)
    assert "accuracy_linear_SVM" not in figures          # no labels


def test_overlap_of_identical_outputs_is_one_and_of_disjoint_zero():
    a = np.zeros((3, 4), bool)
    a[:, :2] = True
    assert quality.output_overlap(a, a) == 1.0
    assert quality.output_overlap(a, ~a) == 0.0
    assert quality.output_overlap(np.zeros((3, 4), bool), a) == 0.0   # no active clean output


def test_usage_entropy_is_one_for_uniform_use_and_lower_for_few_cells():
    uniform = np.eye(8, dtype=bool)           # each of 8 cells active once in 8 inputs
    assert quality.usage_entropy(uniform) == pytest.approx(1.0)
    few = np.zeros((8, 8), bool)
    few[:, 0] = True                          # one cell always active, the others never
    assert quality.usage_entropy(few) == pytest.approx(0.0, abs=1e-6)
    half = np.zeros((8, 8), bool)
    half[np.arange(8), np.arange(8) % 4] = True   # same sparsity, half the cells
    assert 0.0 < quality.usage_entropy(half) < 1.0
    assert quality.usage_entropy(np.zeros((4, 4), bool)) == 0.0


def test_a_frozen_system_is_stable_and_its_curve_does_not_move():
    task = quality.make_task("random-patterns", SMALL.input_shape, seed=1, limit=12, passes=2)
    figures = quality.measure(Frozen(SMALL), task)
    assert figures["late_change"] == 0.0
    assert figures["noise_before"] == figures["noise_after"]
    assert figures["noise_after"]["0.0"] == 1.0


def test_digit_tasks_have_labels_splits_and_the_input_shape():
    for name in ("digits-thermometer", "digits-upsampled"):
        task = quality.make_task(name, (16, 16), seed=0, limit=30, passes=3)
        assert task.X.shape == (30, 16, 16) and task.X.dtype == bool
        assert task.train == 20 and len(task.y) == 30
        assert len(task.lessons) == 3 and task.steps == 60
        assert task.evaluate.shape == (10, 16, 16)
        # moving bits keeps their count
        assert (task.noisy[0.3].sum((1, 2)) == task.evaluate.sum((1, 2))).all()
    # the upsampled code takes any input size; the thermometer code needs a multiple of 8
    assert quality.make_task("digits-upsampled", (6, 6), 0, limit=12).X.shape == (12, 6, 6)
    with pytest.raises(ValueError, match="input_shape"):
        quality.make_task("digits-thermometer", (6, 6), 0, limit=12)
    with pytest.raises(ValueError, match="passes"):
        quality.make_task("random-patterns", (6, 6), 0, limit=12, passes=1)


def test_summarise_gives_mean_and_sample_spread_over_seeds():
    per_seed = [{"a": 1.0, "curve": {"0.1": 0.5}}, {"a": 2.0, "curve": {"0.1": 0.7}},
                {"a": 3.0, "curve": {"0.1": 0.9}}]
    s = quality.summarise(per_seed)
    assert s["a"]["mean"] == 2.0 and s["a"]["std"] == pytest.approx(1.0)
    assert s["a"]["values"] == [1.0, 2.0, 3.0]
    assert s["curve"]["0.1"]["mean"] == pytest.approx(0.7)
    assert s["curve"]["0.1"]["std"] == pytest.approx(0.2)
    assert quality.summarise([{"a": 5.0}])["a"]["std"] == 0.0


def test_vary_candidates_change_one_field_at_a_time():
    got = quality.vary_candidates(SMALL, {"perm_dec": [2, 8], "boost_strength": [0.5]})
    assert [label for label, _ in got] == ["cellular SP, perm_dec=2", "cellular SP, perm_dec=8",
                                           "cellular SP, boost_strength=0.5"]
    assert got[1][1] == SMALL.replace(perm_dec=8)
    with pytest.raises(ConfigError, match="winners"):
        quality.vary_candidates(SMALL, {"winners": [99]})


def test_the_classic_sweep_measures_twelve_candidates_or_the_six_global_ones():
    # the raw input, the cellular SP and the twin learn besides the classic candidates
    one = quality.total_steps(SMALL, 1, ["random-patterns"], limit=10, passes=2)
    assert one == 20 * 4
    assert quality.total_steps(SMALL, 1, ["random-patterns"], "all", limit=10, passes=2) == 20 * 15
    assert quality.total_steps(SMALL, 1, ["random-patterns"], "global", limit=10,
                               passes=2) == 20 * 9


def test_the_benchmark_writes_json_atomically_and_a_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CELLSP_CACHE", str(tmp_path / "cache"))   # no figure from an earlier run
    SMALL.to_json("small.json")
    code = main(["bench", "quality", "--config", "small.json", "--seeds", "2", "--limit", "30",
                 "--passes", "2", "--out", "q.json", "--report", "rep", "--jobs", "0",
                 "--vary", "perm_dec=8", "--tasks", "digits-thermometer,random-patterns"])
    assert code == 0
    data = json.loads((tmp_path / "q.json").read_text())
    assert [f for f in os.listdir(tmp_path) if f.endswith(".part")] == []
    assert list(data["tasks"]) == ["digits-thermometer", "random-patterns"]
    systems = data["tasks"]["digits-thermometer"]["systems"]
    assert {quality.RAW, quality.CELLULAR, quality.TWIN, quality.CLASSIC,
            "cellular SP, perm_dec=8"} <= set(systems)
    cell = systems[quality.CELLULAR]
    assert len(cell["accuracy_linear_SVM"]["values"]) == 2
    assert 0.0 <= cell["overlap_at_noise"]["mean"] <= 1.0
    assert systems[quality.RAW]["overlap_at_noise"]["mean"] == pytest.approx(0.8, abs=0.02)
    assert set(data["targets"]["random-patterns"]) == {
        "overlap >= raw input", "overlap >= classic SP", "cells used >= 95%"}
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## random-patterns" in report and "± " in report
    assert (tmp_path / "rep" / "noise_curves.png").stat().st_size > 0
    # the twin starts from the golden model's synapses: the same outputs before learning
    twin = systems[quality.TWIN]
    assert twin["noise_before"]["0.2"] == cell["noise_before"]["0.2"]


@pytest.mark.parametrize("argv, message", [
    (["--vary", "nosuchfield=1,2"], "FIELD=V1,V2"),
    (["--vary", "perm_dec=two"], "int"),
    (["--vary", "winners=99"], "winners"),
    (["--tasks", "digits,mnist"], "unknown task"),
    (["--board", "icebreaker"], "give one of them"),
    (["--seeds", "0"], "at least 1"),
    (["--passes", "1"], "at least 2"),
    (["--out", "existing.json"], "--force"),
    (["--report", "existing.json"], "not a folder"),
])
def test_a_bad_option_gives_one_line_before_any_work(argv, message, tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.chdir(tmp_path)
    SMALL.to_json("small.json")
    (tmp_path / "existing.json").write_text("{}")
    monkeypatch.setattr(bench_quality, "bench_quality", lambda *a, **k: pytest.fail("ran"))
    assert main(["bench", "quality", "--config", "small.json", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellsp bench quality: error: ")
    assert message in err[0]
    assert (tmp_path / "existing.json").read_text() == "{}"


def test_a_config_the_digits_cannot_fill_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    SMALL.replace(input_shape=(6, 6), cell_shape=(3, 3)).to_json("six.json")
    monkeypatch.setattr(bench_quality, "bench_quality", lambda *a, **k: pytest.fail("ran"))
    assert main(["bench", "quality", "--config", "six.json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input_shape" in err[0]
    # the tasks that do fit run on it
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "quality", "--config", "six.json", "--tasks",
                 "digits-upsampled,random-patterns", "--seeds", "1", "--limit", "12",
                 "--passes", "2", "--out", "q.json", "--report", "rep"]) == 0


def test_grid_candidates_are_the_product_of_the_fields_values():
    got = quality.grid_candidates(SMALL, {"winners": [2, 4], "perm_dec": [4, 8, 16]})
    assert len(got) == 6
    assert [label for label, _ in got[:3]] == [
        "cellular SP, winners=2, perm_dec=4", "cellular SP, winners=2, perm_dec=8",
        "cellular SP, winners=2, perm_dec=16"]
    assert got[4][1] == SMALL.replace(winners=4, perm_dec=8)
    assert {(c.winners, c.perm_dec) for _, c in got} == {
        (w, d) for w in (2, 4) for d in (4, 8, 16)}
    with pytest.raises(ConfigError, match="winners"):
        quality.grid_candidates(SMALL, {"perm_dec": [4], "winners": [3, 99]})
    # the raw input, the six candidates and the classic SP learn (20 steps each here)
    assert quality.grid_steps(SMALL, {"winners": [2, 4], "perm_dec": [4, 8, 16]}, 1,
                              ["random-patterns"], limit=10, passes=2) == 20 * 8


def _summary(overlap, used, accuracy=None):
    s = {"overlap_at_noise": {"mean": overlap}, "cells_used": {"mean": used}}
    if accuracy is not None:
        s["accuracy_linear_SVM"] = {"mean": accuracy}
    return s


def test_the_shortfall_adds_how_far_each_target_is_missed():
    raw = {"a": _summary(0.8, 0.8, 0.95), "b": _summary(0.81, 0.9)}
    classic = {"a": _summary(0.5, 0.4, 0.96), "b": _summary(0.92, 0.99)}
    got = quality.shortfall({"a": _summary(0.75, 0.9, 0.97), "b": _summary(0.95, 1.0)},
                            raw, classic)
    assert got["a"] == pytest.approx({"overlap >= raw input": 0.05, "overlap >= classic SP": 0,
                                      "accuracy >= classic SP": 0, "cells used >= 95%": 0.05})
    assert got["b"] == {"overlap >= raw input": 0, "overlap >= classic SP": 0,
                        "cells used >= 95%": 0}
    assert got["total"] == pytest.approx(0.1)


def test_the_grid_ranks_its_candidates_and_writes_json_and_a_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SMALL.to_json("small.json")
    code = main(["bench", "quality", "--config", "small.json", "--seeds", "1", "--limit", "20",
                 "--passes", "2", "--out", "g.json", "--report", "rep", "--grid",
                 "winners=1,9", "--grid", "stimulus_threshold=1,2", "--tasks",
                 "digits-thermometer"])
    assert code == 0
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["benchmark"] == "quality-grid" and data["grid"] == {
        "winners": [1, 9], "stimulus_threshold": [1, 2]}
    totals = [row["shortfall"]["total"] for row in data["ranking"]]
    assert len(totals) == 4 and totals == sorted(totals)
    systems = data["tasks"]["digits-thermometer"]["systems"]
    assert {quality.RAW, quality.CLASSIC} <= set(systems) and quality.TWIN not in systems
    # every cell with a positive overlap is active under winners=9: more cells used than k=1
    used = {row["config"]["winners"]: systems[row["label"]]["cells_used"]["mean"]
            for row in data["ranking"] if row["config"]["stimulus_threshold"] == 1}
    assert used[9] > used[1]
    assert "| winners=" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--grid", "winners=2,99"], "winners"),
    (["--grid", "perm_dec=two"], "int"),
    (["--grid", "perm_dec=4", "--vary", "winners=2"], "give one of them"),
])
def test_a_bad_grid_gives_one_line_before_any_work(argv, message, tmp_path, monkeypatch,
                                                   capsys):
    monkeypatch.chdir(tmp_path)
    SMALL.to_json("small.json")
    monkeypatch.setattr(bench_quality, "bench_grid", lambda *a, **k: pytest.fail("ran"))
    assert main(["bench", "quality", "--config", "small.json", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellsp bench quality: error: ")
    assert message in err[0]
