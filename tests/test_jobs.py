"""Sweeps as Dask tasks (`cellsp.sim.jobs`): a local cluster of two worker processes gives the
in-process results, the cache makes a rerun run nothing, a failing job and a killed worker are
retried and reported while the other results are kept, and everything listens on the loopback
address only and ends with the sweep."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cellsp.host.cli import main
from cellsp.sim import jobs, quality
from cellsp.sim.config import SPConfig

SMALL = SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=1)
#: no Dask scheduler listens here: a sweep that needs one fails
NOWHERE = "tcp://127.0.0.1:9"


def sample(value: int, **options) -> jobs.Job:
    return jobs.Job("cellsp.sim.jobs:sample_job", {"value": value, **options},
                    label=f"sample {value}")


def _children() -> dict[int, str]:
    # multiprocessing's resource tracker stays until this interpreter ends, by design
    found = {}
    for p in psutil.Process().children(recursive=True):
        try:
            command = " ".join(p.cmdline())
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in command:
                found[p.pid] = command
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
def scheduler():
    """The address of a local cluster of two single-threaded worker processes, shared by the
    tests of this file; no process of it is left after it."""
    before = _children()
    with jobs.local_client(2) as client:
        assert len(_children()) >= len(before) + 2
        yield client.scheduler.address
    time.sleep(0.5)
    assert {pid: cmd for pid, cmd in _children().items() if pid not in before} == {}


def _listening(process: psutil.Process) -> list[str]:
    found = []
    for p in [process, *process.children(recursive=True)]:
        try:
            found += [c.laddr.ip for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return found


def test_two_workers_give_the_in_process_results_and_a_rerun_runs_nothing(scheduler, tmp_path):
    sweep = [sample(v, sleep_s=0.1) for v in range(6)]
    here = jobs.run_jobs(sweep, at_once=0, cache=False)
    seen = []
    there = jobs.run_jobs(sweep, scheduler=scheduler, cache=tmp_path, progress=seen.append)
    assert [r.value for r in there] == [r.value for r in here]
    assert [r.files for r in there] == [r.files for r in here]
    assert there[1].files == {"1.txt": b"1\n"} and there[2].value == 4
    assert {r.worker for r in here} == {"in-process"}
    assert all(r.worker.startswith("tcp://127.0.0.1:") and not r.cached for r in there)
    assert len(seen) == len(sweep)
    # all cached: no scheduler is needed (one at NOWHERE would fail), nothing runs
    again = jobs.run_jobs(sweep, scheduler=NOWHERE, cache=tmp_path)
    assert all(r.cached for r in again)
    assert [r.value for r in again] == [r.value for r in here]
    assert [r.files for r in again] == [r.files for r in here]
    # a changed job runs, the others come from the cache
    changed = jobs.run_jobs(sweep + [sample(7)], at_once=0, cache=tmp_path)
    assert [r.cached for r in changed] == [True] * len(sweep) + [False]
    # a result the caller does not want kept (a verdict that depends on the load) runs again
    jobs.run_jobs([sample(11)], at_once=0, cache=tmp_path, cacheable=lambda value: False)
    assert not jobs.run_jobs([sample(11)], at_once=0, cache=tmp_path)[0].cached


def test_quality_on_two_workers_matches_in_process(scheduler, tmp_path):
    args = dict(seeds=2, tasks=["digits-thermometer"], limit=15, passes=2)
    steps = []
    here = quality.run_quality(SMALL, **args)
    there = quality.run_quality(SMALL, **args, scheduler=scheduler, cache=tmp_path,
                                progress=steps.append)
    assert there == here
    assert sum(steps) == quality.total_steps(SMALL, **args)
    # the figures are the systems' own: the cellular SP on seed 1, measured directly
    task = quality.make_task("digits-thermometer", SMALL.input_shape, 1, 15, 2)
    direct = quality.measure(quality.make_system(quality.CELLULAR, SMALL.replace(
        seed=SMALL.seed + 1)), task)
    assert there["tasks"]["digits-thermometer"]["systems"][quality.CELLULAR][
        "accuracy_linear_SVM"]["values"][1] == direct["accuracy_linear_SVM"]


def test_a_failing_job_and_a_killed_worker_are_retried_and_the_rest_kept(scheduler, tmp_path):
    sweep = [sample(1), sample(2, fail_marker=str(tmp_path / "fail")),
             jobs.Job("cellsp.sim.jobs:no_such_job", {}, label="missing"), sample(4)]
    results = jobs.run_jobs(sweep, scheduler=scheduler, cache=tmp_path / "cache")
    ok, failed_once, missing, last = results
    assert (ok.value, ok.failures) == (1, [])
    assert failed_once.value == 4 and len(failed_once.failures) == 1
    assert "sample job 2 fails once" in failed_once.failures[0]["error"]
    assert failed_once.failures[0]["worker"] != failed_once.worker   # retried on the other
    assert "sample job 2" in failed_once.failures[0]["log"]          # its log comes back
    assert not missing.ok and len(missing.failures) == 2 and "no_such_job" in missing.error
    assert last.value == 16
    with pytest.raises(jobs.JobsError, match="1 of the sweep's jobs failed.*missing"):
        jobs.raise_failures(results)
    # the rerun resumes from the cache: only the job that failed runs again
    again = jobs.run_jobs(sweep, at_once=0, cache=tmp_path / "cache")
    assert [r.cached for r in again] == [True, True, False, True]
    # a worker killed in the middle of a job: the job runs again on another worker
    died_once, *others = jobs.run_jobs([sample(3, die_marker=str(tmp_path / "die"),
                                               sleep_s=0.3), sample(5), sample(6)],
                                       scheduler=scheduler, cache=tmp_path / "cache")
    assert died_once.value == 9 and len(died_once.failures) == 1
    assert "KilledWorker" in died_once.failures[0]["error"]
    assert died_once.failures[0]["worker"] != died_once.worker
    assert [(r.value, r.failures) for r in others] == [(25, []), (36, [])]
    # in this process too, a job is tried twice
    (tmp_path / "fail").unlink()
    alone = jobs.run_jobs(sweep[1:2], at_once=0, cache=False)[0]
    assert alone.value == 4 and len(alone.failures) == 1


def test_the_cluster_listens_on_the_loopback_address_only(scheduler):
    assert jobs.loopback_only(scheduler)
    addresses = _listening(psutil.Process())
    assert len(addresses) >= 3                 # the scheduler and each worker and nanny
    assert set(addresses) == {"127.0.0.1"}
    assert not jobs.loopback_only("tcp://10.0.0.5:8786")
    assert not jobs.loopback_only("tls://lab-scheduler:8786")


def test_ctrl_c_ends_the_cluster_and_every_worker():
    # after the interrupt, before this interpreter ends, no process of the cluster is left
    script = ("import sys, time, psutil\n"
              "from cellsp.sim import jobs\n"
              "try:\n"
              "    jobs.run_jobs([jobs.Job('cellsp.sim.jobs:sample_job', "
              "{'value': v, 'sleep_s': 120}) for v in range(2)], at_once=1, cache=False)\n"
              "except KeyboardInterrupt:\n"
              "    time.sleep(0.5)\n"
              "    left = [p.pid for p in psutil.Process().children(recursive=True)\n"
              "            if 'resource_tracker' not in ' '.join(p.cmdline())]\n"
              "    print('left', left, flush=True)\n"
              "    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                _listening(child) for child in parent.children()):
            time.sleep(0.2)                    # until the worker process listens
        spawned = parent.children(recursive=True)
        assert len(spawned) >= 2               # the worker and multiprocessing's tracker
        time.sleep(1.0)                        # its job is running
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        assert proc.stdout.read().decode().strip() == "left []"
        gone, alive = psutil.wait_procs(spawned, timeout=10)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_board_sweep_builds_each_candidate_as_a_job_and_keeps_the_largest_meeting_timing(
        tmp_path, monkeypatch):
    from cellsp.boards import sweep
    from cellsp.boards.boards import BOARDS

    def build_board(board, config, cells_per_pe, out_dir):
        """A stand-in build: timing met below 16 cells, a tool failure at 16."""
        h, w = config.cell_shape
        if h * w == 16:
            (Path(out_dir) / "cellsp.tim").write_text("ERROR: placement failed\n")
            raise sweep.BuildError(f"the build failed; see {out_dir}/cellsp.tim (nextpnr)")
        (Path(out_dir) / board.bitstream).write_bytes(bytes([h, w]))
        usage = {"used": h * w, "available": 100}
        return {"logic": usage, "ffs": usage, "bram": usage, "logic_unit": "LC",
                "achieved_clock_mhz": 20.0 - h * w, "target_clock_mhz": 12.0,
                "timing_met": h * w < 16, "cycles_per_input": 10,
                "inputs_per_s_at_target_clock": 1.0, "inputs_per_s_at_achieved_clock": 1.0,
                "uart_inputs_per_s": 1.0, "uart_pipelined": 1.0, "build_seconds": 0.1,
                "estimate": None, "bitstream": f"{out_dir}/{board.bitstream}"}

    monkeypatch.setattr(sweep, "build_board", build_board)
    small = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1)
    candidates = [(small, 9), (small.replace(cell_shape=(3, 4)), 12),
                  (small.replace(cell_shape=(4, 4)), 16), (small.replace(cell_shape=(40, 40)), 1)]
    res = sweep.sweep_board(BOARDS["icebreaker"], tmp_path / "out", candidates, at_once=0,
                            cache=tmp_path / "cache")
    assert [a["result"] for a in res["attempts"]] == ["timing met", "timing met", "does not fit",
                                                      "does not fit"]
    assert res["best"]["cells"] == 12 and res["best_config"]["cell_shape"] == [3, 4]
    built = tmp_path / "out" / "icebreaker" / "3x4-p12"
    assert (built / "cellsp.bin").read_bytes() == bytes([3, 4])       # the files, by content
    report = json.loads((built / "report.json").read_text())
    assert report["bitstream"] == str(built / "cellsp.bin")
    failed = tmp_path / "out" / "icebreaker" / "4x4-p16"
    assert str(failed / "cellsp.tim") in res["attempts"][2]["message"]
    assert (failed / "cellsp.tim").read_text() == "ERROR: placement failed\n"
    assert "cannot fit" in res["attempts"][3]["message"]             # estimated, not built
    # a rerun takes every build from the cache
    monkeypatch.setattr(sweep, "build_board", None)
    again = sweep.sweep_board(BOARDS["icebreaker"], tmp_path / "again", candidates, at_once=0,
                              cache=tmp_path / "cache")
    assert again["best"]["cells"] == 12
    assert (tmp_path / "again" / "icebreaker" / "3x4-p12" / "cellsp.bin").exists()


@pytest.mark.parametrize("command", ["quality", "boards", "mutations"])
@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0", "--scheduler", "tcp://127.0.0.1:8786"], "give one of them"),
    (["--scheduler", "lab1:8786"], "expected tcp://HOST:PORT"),
    (["--jobs", "-1"], "at least 0"),
])
def test_sweep_options_are_checked_before_any_work(command, argv, message, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["bench", command, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cellsp bench {command}: error: ") and message in err
    assert len(err.splitlines()) == 1 and not out.exists()
