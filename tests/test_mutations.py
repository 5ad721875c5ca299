"""The tests must be able to fail: each mutation marked `suite` in host/mutations.py's list (the
one list `cellsp bench mutations` runs in full) breaks one rule of SPEC.md in a copy of cellsp.sim
(the golden model) or cellsp.hdl (the cell array and the protocol engine), and the first tests
of its file in `TESTS` (the golden model's, tests/test_array.py or tests/test_protocol.py) must
then fail. Also: every mutation's original text occurs exactly once in its file, and the runner
itself reports a killed, a surviving and an equivalent mutant and writes its JSON."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cellsp.host import mutations
from cellsp.host.cli import main
from cellsp.host.mutations import (MUTATIONS, TESTS, Mutation, TestGroup, check_anchors,
                                   run_mutants)

ROOT = Path(__file__).resolve().parent.parent
SUITE = [m for m in MUTATIONS if m.suite]


def test_every_mutation_applies_exactly_once_and_has_tests():
    assert check_anchors() == []
    assert len(MUTATIONS) >= 60 and len(SUITE) == 30


@pytest.mark.parametrize("mutation", SUITE, ids=[m.rule for m in SUITE])
def test_tests_catch_mutation(tmp_path, mutation):
    copy = tmp_path / mutation.package
    shutil.copytree(ROOT / mutation.package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / mutation.file
    target.write_text(mutation.apply(target.read_text()))
    env = dict(os.environ, CELLSP_OVERRIDE=f"{mutation.package}={copy}")
    first = TESTS[mutation.file][0]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *first.args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, f"mutation {mutation.rule!r} survived:\n{result.stdout[-2000:]}"


GOLDEN_WINNERS = "self._tie = (n - 1 - np.arange(n))"


def test_runner_reports_killed_survived_and_equivalent(tmp_path, capsys, monkeypatch):
    """`cellsp bench mutations` over three mutants of the golden model and one fast test: the
    tie-break flipped (that test fails), the stimulus threshold (that test never reaches it),
    a comment (equivalent)."""
    group = TestGroup(("tests/test_golden_spec.py", "-k", "ties_go_to_the_lower"))
    comment = "# Inhibition key: boosted * cells"
    mutants = (
        Mutation("sim/golden.py", "ties to the higher index", GOLDEN_WINNERS,
                 "self._tie = (np.arange(n))"),
        Mutation("sim/golden.py", "stimulus threshold inclusive",
                 "overlap[overlap < cfg.stimulus_threshold] = 0",
                 "overlap[overlap <= cfg.stimulus_threshold] = 0"),
        Mutation("sim/golden.py", "a comment reworded", comment, comment.replace("key", "order"),
                 equivalent="only a comment changes"),
    )
    monkeypatch.setattr(mutations, "MUTATIONS", mutants)
    monkeypatch.setattr(mutations, "TESTS", {"sim/golden.py": (group,)})
    monkeypatch.setenv("CELLSP_CACHE", str(tmp_path / "cache"))   # no verdict from an earlier run
    out = tmp_path / "m.json"
    assert main(["bench", "mutations", "--jobs", "0", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    status = {m["rule"]: (m["status"], m["killed_by"]) for m in data["mutants"]}
    assert status["ties to the higher index"][0] == "killed"
    assert "test_ties_go_to_the_lower_raster_index" in status["ties to the higher index"][1]
    assert status["stimulus threshold inclusive"] == ("survived", None)
    assert status["a comment reworded"] == ("equivalent", None)
    assert data["files"]["sim/golden.py"] == {"mutants": 3, "equivalent": 1, "killed": 1,
                                              "survived": 1, "errors": 0, "score": 0.5}
    printed = capsys.readouterr().out
    assert printed.count("[") >= 3 and "unmutated: tests/test_golden_spec.py" in printed
    assert "stimulus threshold inclusive" in printed and "argument: only a comment" in printed


def test_runner_refuses_an_anchor_not_found_once():
    with pytest.raises(ValueError, match="found 0 times"):
        run_mutants([Mutation("sim/golden.py", "absent", "no such text", "x")])


def test_command_lists_the_mutations_and_refuses_an_unknown_file(capsys, tmp_path):
    assert main(["bench", "mutations", "--list", "--file", "hdl/uart.py"]) == 0
    out = capsys.readouterr().out
    assert out.count("hdl/uart.py: ") == sum(m.file == "hdl/uart.py" for m in MUTATIONS)
    assert main(["bench", "mutations", "--file", "hdl/nothing.py",
                 "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "error: argument --file: no mutations of 'hdl/nothing.py'" in err
    assert not (tmp_path / "m.json").exists()


def test_a_rerun_runs_only_what_was_not_killed_and_carries_the_rest():
    first = [Mutation("sim/golden.py", rule, "a", "b") for rule in ("one", "two", "three")]
    row = dict(file="sim/golden.py", killed_by=None)
    previous = {"date": "d", "commit": "c", "mutants": [
        {**row, "rule": "one", "status": "killed", "killed_by": "tests/x.py::t"},
        {**row, "rule": "two", "status": "survived"}]}
    assert [m.rule for m in mutations.not_killed_in(previous, first)] == ["two", "three"]
    data = {"date": "e", "commit": "f", "pass": True, "mutants": [
        {**row, "rule": "two", "status": "killed", "killed_by": "tests/y.py::u"},
        {**row, "rule": "three", "status": "equivalent"}]}
    merged = mutations.merge_rerun(previous, data)
    assert [m["rule"] for m in merged["mutants"]] == ["one", "two", "three"]
    assert merged["mutants"][0]["carried_from"] == {"date": "d", "commit": "c"}
    assert merged["files"]["sim/golden.py"] == {"mutants": 3, "equivalent": 1, "killed": 2,
                                                "survived": 0, "errors": 0, "score": 1.0}


def test_a_mutant_whose_tests_are_absent_is_an_error_not_a_survivor():
    mutant = Mutation("sim/golden.py", "ties to the higher index", GOLDEN_WINNERS,
                      "self._tie = (np.arange(n))")
    data = run_mutants([mutant], tests={"sim/golden.py": (TestGroup(("tests/absent.py",)),)})
    assert [m["status"] for m in data["mutants"]] == ["error"] and not data["pass"]
