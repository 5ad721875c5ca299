"""The jobs of a sweep, run as Dask tasks: on this machine or on a lab's Dask cluster, with a
cache of their results.

A `Job` is plain data: the dotted name of a function (``"cellsp.sim.quality:quality_job"``),
its keyword arguments (JSON-able) and what else determines its result (``key``: source digests,
tool versions). A worker that has cellsp installed imports the function, runs it with its
standard output, standard error and logging captured, and sends back its value (JSON-able
data) and its files (a function returns `JobOutput(value, files={name: bytes})` for those), so
nothing depends on a shared disk. `run_jobs` runs a list of jobs:

- ``at_once=0`` (and no scheduler): one after the other in this process (tests, debugging);
- default: a `distributed.LocalCluster` of one single-threaded worker process per core (or
  ``at_once`` of them), listening on the loopback address only (``127.0.0.1``, no dashboard);
- ``scheduler="tcp://host:8786"`` or ``"tls://..."``: an existing Dask cluster; at most
  ``at_once`` jobs are given to it at a time (default: one per worker thread it has then).

A job whose function raises, or whose worker dies while running it, is tried once more
(``retries``), preferably on another worker (the scheduler may choose the same one when no
other is free: a worker that died is gone anyway); each failure is kept with the job's log
(`JobResult.failures`), a job that fails every try is reported with its last error, and the
other jobs' results are kept. The local cluster's scheduler gives up on a task at the first
worker death (``allowed_failures=0``) so that the retry, and its report, are `run_jobs`' own;
a remote scheduler applies its own ``distributed.scheduler.allowed-failures`` first.

Each successful result is cached under ``$CELLSP_CACHE/jobs/`` (`cellsp.sim.processes.
cache_root`) by the sha256 of the canonical JSON of the job's function, arguments and key,
written atomically; a rerun of a sweep, or the rest of an interrupted one, runs only the jobs
whose results are not there. The cache lives on the machine that calls `run_jobs`: workers need
none.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import importlib.metadata
import io
import ipaddress
import json
import logging
import os
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .processes import cache_root

__all__ = ["Job", "JobOutput", "JobResult", "JobsError", "run_jobs", "execute", "cache_path",
           "package_digest", "versions", "write_files", "loopback_only", "raise_failures",
           "local_client", "sample_job"]

#: how long a job's log may be in a failure report (its end is kept)
LOG_LIMIT = 20_000


class JobsError(RuntimeError):
    """The jobs could not be run at all (no scheduler at the address, a cluster that would not
    start); a job's own failure is reported in its `JobResult` instead."""


@dataclass(frozen=True)
class Job:
    """One job of a sweep, as data: `function` ("package.module:name") called with the keyword
    `arguments` (JSON-able); `key`: what else determines the result (source digests, tool
    versions; JSON-able); `label`: how progress lines and failure reports name it."""

    function: str
    arguments: dict
    key: Any = None
    label: str = ""

    @property
    def cache_key(self) -> str:
        """sha256 (hex) of the canonical JSON of the function, arguments and key."""
        text = json.dumps({"function": self.function, "arguments": self.arguments,
                           "key": self.key}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def name(self) -> str:
        """The label, or the function's name."""
        return self.label or self.function


@dataclass(frozen=True)
class JobOutput:
    """What a job function returns when it has files to send back: its `value` (JSON-able)
    and `files` ({relative name: content})."""

    value: Any
    files: dict = field(default_factory=dict)


@dataclass
class JobResult:
    """One job's outcome. `value` and `files` ({name: bytes}) are the function's; `error` is
    None, or the last try's failure (a traceback, or how the worker died); `failures`: every
    failed try, {"worker", "error", "log"}; `log`: the captured output of the try that counts;
    `cached`: taken from the cache, nothing run."""

    job: Job
    value: Any = None
    files: dict = field(default_factory=dict)
    error: str | None = None
    log: str = ""
    failures: list = field(default_factory=list)
    cached: bool = False
    worker: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The job gave a result."""
        return self.error is None


# ---------------------------------------------------------------------- the worker's side


def _function(name: str) -> Callable:
    module, _, attribute = name.partition(":")
    if not attribute:
        raise ValueError(f"job function {name!r}: expected 'package.module:function'")
    return getattr(importlib.import_module(module), attribute)


def execute(function: str, arguments: dict) -> dict:
    """Run one job here (in a worker, or in-process): the function's value (through JSON, as
    the cache will give it back), files, captured log, seconds, this worker's address, and the
    traceback if it raised (then no value). Never raises for the job's own failure."""
    start = time.perf_counter()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    value, files, error = None, {}, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = _function(function)(**arguments)
        if isinstance(result, JobOutput):
            result, files = result.value, {str(k): bytes(v) for k, v in result.files.items()}
        value = json.loads(json.dumps(result))
    except Exception:
        error = traceback.format_exc()
    finally:
        root.removeHandler(handler)
    return {"value": value, "files": files, "error": error, "log": out.getvalue()[-LOG_LIMIT:],
            "seconds": time.perf_counter() - start, "worker": _worker_address()}


def _worker_address() -> str:
    # the Dask worker running this job, if any (distributed is loaded already in a worker)
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return "in-process"


def sample_job(value: int, sleep_s: float = 0.0, fail_marker: str | None = None,
               die_marker: str | None = None) -> JobOutput:
    """A small job for tests and for trying a cluster: after `sleep_s`, it returns ``value ** 2``
    and a file ``value.txt``. With `fail_marker` (a path) it raises the first time (creating
    the file), with `die_marker` it kills its own process the first time: the retry succeeds."""
    print(f"sample job {value}")
    time.sleep(sleep_s)
    for marker, act in ((fail_marker, "fail"), (die_marker, "die")):
        if marker and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            if act == "fail":
                raise RuntimeError(f"sample job {value} fails once")
            os.kill(os.getpid(), 9)
    return JobOutput(value ** 2, {f"{value}.txt": f"{value}\n".encode()})


# ---------------------------------------------------------------------- the cache


def cache_path(job: Job, cache: Path | None = None) -> Path:
    """Where `job`'s result is cached: ``<cache>/<sha256>.json`` (default cache: ``jobs`` in
    `cellsp.sim.processes.cache_root`)."""
    return Path(cache if cache is not None else cache_root() / "jobs") / f"{job.cache_key}.json"


def _load(job: Job, cache: Path) -> JobResult | None:
    path = cache_path(job, cache)
    try:
        data = json.loads(path.read_text())
        files = {k: base64.b64decode(v) for k, v in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None      # absent, or unreadable: run the job again
    return JobResult(job, value=data["value"], files=files, log=data.get("log", ""),
                     cached=True, worker=data.get("worker"), seconds=data.get("seconds", 0.0))


def _store(result: JobResult, cache: Path) -> None:
    path = cache_path(result.job, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"function": result.job.function, "arguments": result.job.arguments,
            "key": result.job.key, "value": result.value,
            "files": {k: base64.b64encode(v).decode() for k, v in result.files.items()},
            "log": result.log, "worker": result.worker, "seconds": result.seconds}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def package_digest(*packages: str) -> str:
    """sha256 (16 hex digits) of the Python sources of `packages` (e.g. "cellsp.sim"): part of
    a job's key when its result depends on their code."""
    digest = hashlib.sha256()
    for package in packages:
        folder = Path(importlib.import_module(package).__file__).parent
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{package}/{path.name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def versions(*distributions: str) -> dict[str, str | None]:
    """The installed versions of `distributions` (None where not installed): part of a job's
    key when its result depends on them."""
    out = {}
    for name in distributions:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_files(files: dict, folder: Path) -> list[Path]:
    """Write a job's `files` ({relative name: bytes}) under `folder`, each atomically (a
    temporary file renamed into place); a name that leaves the folder raises ValueError."""
    folder = Path(folder)
    written = []
    for name, content in files.items():
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents:
            raise ValueError(f"job file {name!r} is outside {folder}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(content)
        os.replace(tmp, path)
        written.append(path)
    return written


# ---------------------------------------------------------------------- running


def _from_output(job: Job, out: dict, failures: list) -> JobResult:
    return JobResult(job, value=out["value"], files=out["files"], error=out["error"],
                     log=out["log"], failures=failures, worker=out["worker"],
                     seconds=out["seconds"])


def run_jobs(jobs: Iterable[Job], at_once: int | None = None, scheduler: str | None = None,
             cache: bool | Path = True, retries: int = 1,
             progress: Callable[[JobResult], object] | None = None,
             cacheable: Callable[[Any], bool] | None = None) -> list[JobResult]:
    """Run `jobs` and return their results in the same order (see the module docstring).
    `at_once`: 0 runs them in this process; else at most that many at a time (default: one per
    core on the local cluster, one per worker thread on `scheduler`'s). `cache`: True (the
    default folder), a folder, or False; `cacheable(value)`: whether a result is kept there
    (default: every result of a job that did not fail). `retries`: further tries of a job that
    fails.
    `progress(result)` hears each result as it is known (cached ones first). Raises JobsError
    when no cluster can be reached; Ctrl-C closes the cluster before it goes on."""
    jobs = list(jobs)
    folder = None if cache is False else (cache_root() / "jobs" if cache is True else cache)
    tell = progress or (lambda result: None)
    results: list[JobResult | None] = [None] * len(jobs)

    def finish(index: int, result: JobResult) -> None:
        results[index] = result
        if (result.ok and not result.cached and folder is not None
                and (cacheable is None or cacheable(result.value))):
            _store(result, Path(folder))
        tell(result)

    pending = []
    for index, job in enumerate(jobs):
        hit = _load(job, Path(folder)) if folder is not None else None
        if hit is not None:
            finish(index, hit)
        else:
            pending.append(index)
    if not pending:
        return results
    if at_once == 0 and scheduler is None:
        for index in pending:
            failures: list = []
            for _ in range(retries + 1):
                out = execute(jobs[index].function, jobs[index].arguments)
                if out["error"] is None:
                    break
                failures.append({k: out[k] for k in ("worker", "error", "log")})
            finish(index, _from_output(jobs[index], out, failures))
    else:
        _run_on_dask(jobs, pending, at_once, scheduler, retries, finish)
    return results


def raise_failures(results: Iterable[JobResult]) -> None:
    """Raise `JobsError` naming each job of `results` that failed every try, with the last line
    of its error, if any did; the message says that a rerun runs only those (the others are
    cached)."""
    failed = [r for r in results if r is not None and not r.ok]
    if failed:
        what = "; ".join(f"{r.job.name} on {r.worker}: {r.error.strip().splitlines()[-1]}"
                         for r in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise JobsError(f"{len(failed)} of the sweep's jobs failed on every try ({what}{more}); "
                        f"the others' results are cached: fix the cause and run it again")


def loopback_only(address: str) -> bool:
    """Whether a Dask address (``tcp://127.0.0.1:40123``) is on the loopback interface."""
    host = urlparse(address).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextlib.contextmanager
def local_client(workers: int):
    """A `distributed.Client` of a new local cluster of `workers` single-threaded worker
    processes listening on 127.0.0.1 only (no dashboard), whose scheduler gives up on a task at
    its first worker death and gives each worker only the job it runs; the cluster and its
    processes end with the block."""
    # Dask takes about a second to import: loaded only when jobs run on it (psutil with it)
    import dask
    import psutil
    from distributed import Client, LocalCluster

    before = {p.pid for p in psutil.Process().children(recursive=True)}

    # jobs that wait, wait on the scheduler, not on a worker (saturation 1.0), so that a
    # worker's death fails no job but its own (`run_jobs` also gives it no more jobs than
    # worker threads)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        # no worker yet: the workers start below, where an interrupt still closes them
        cluster = LocalCluster(host="127.0.0.1", n_workers=0, threads_per_worker=1,
                               processes=True, dashboard_address=None,
                               # jobs hold no Dask data: no worker paused or ended for memory
                               memory_limit=0,
                               # its HTTP routes (health, metrics) on a free loopback port
                               scheduler_kwargs={"allowed_failures": 0,
                                                 "dashboard_address": "127.0.0.1:0"},
                               silence_logs=logging.CRITICAL)
    try:
        cluster.scale(workers)
        client = Client(cluster)
        try:
            client.wait_for_workers(workers)
            addresses = [cluster.scheduler_address, *client.scheduler_info()["workers"]]
            outside = [a for a in addresses if not loopback_only(a)]
            if outside:
                raise JobsError(f"the local Dask cluster listens beyond the loopback address "
                                f"({', '.join(outside)})")
            yield client
        finally:
            client.close()
    except BaseException:
        # an interrupt or a failure abandons the running jobs: their workers end now, not
        # after a graceful close that would wait for them
        _kill_started(before)
        raise
    finally:
        _close(cluster, before)


def _close(cluster, before: set[int]) -> None:
    """Close `cluster`; if that fails (an interrupt in the middle of its start can leave it
    unable to), kill the processes it started: this process's children not in `before`."""
    try:
        cluster.close()
    except Exception:
        pass                # its processes are killed below
    _kill_started(before)


def _kill_started(before: set[int]) -> None:
    """Kill this process's children that are not in `before` and theirs (the nannies and their
    workers; multiprocessing's resource tracker aside) and wait for them."""
    # psutil comes with Dask (distributed depends on it)
    import psutil

    started = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.pid not in before and "resource_tracker" not in " ".join(child.cmdline()):
                started.append(child)
    for process in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(started, timeout=10)


@contextlib.contextmanager
def _client(at_once: int | None, scheduler: str | None):
    # Dask takes about a second to import: loaded only when jobs run on it
    from distributed import Client

    if scheduler is None:
        with local_client(at_once or os.cpu_count() or 1) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise JobsError(f"no Dask scheduler at {scheduler} ({exc})") from None
    try:
        yield client
    finally:
        client.close()


def _run_on_dask(jobs: list[Job], pending: list[int], at_once: int | None,
                 scheduler: str | None, retries: int, finish) -> None:
    # Dask takes about a second to import: loaded only when jobs run on it
    from distributed import as_completed

    with _client(at_once, scheduler) as client:

        def room() -> int:
            # no more jobs than worker threads (counted again each time: workers may join), so
            # that a worker holds only the job it runs and its death fails no other
            return (at_once or sum(client.nthreads().values()) or 1) - len(running)
        queue = list(pending)
        tries: dict[int, list] = {index: [] for index in pending}
        running: dict = {}
        done = as_completed()

        def submit(index: int, avoid: str | None = None) -> None:
            job = jobs[index]
            # a retry prefers the workers other than the one that failed, if any
            workers = client.scheduler_info()["workers"] if avoid else []
            others = [w for w in workers if w != avoid]
            where = {"workers": others, "allow_other_workers": True} if others else {}
            future = client.submit(execute, job.function, job.arguments, pure=False,
                                   key=f"{job.name}-{uuid.uuid4().hex[:8]}", **where)
            running[future] = index
            done.add(future)

        while queue and room() > 0:
            submit(queue.pop(0))
        for future in done:
            index = running.pop(future)
            try:
                out = future.result()
            except Exception as exc:     # the worker died (KilledWorker) or the task was lost
                worker = getattr(getattr(exc, "last_worker", None), "address", None)
                out = {"value": None, "files": {}, "log": "", "seconds": 0.0, "worker": worker,
                       "error": f"{type(exc).__name__}: {exc}"}
            if out["error"] is not None:
                tries[index].append({k: out[k] for k in ("worker", "error", "log")})
                if len(tries[index]) <= retries:
                    submit(index, avoid=out["worker"])
                    continue
            finish(index, _from_output(jobs[index], out, tries[index]))
            while queue and room() > 0:
                submit(queue.pop(0))
