"""The SP quality benchmark (`cellsp bench quality`): tasks, noise, figures and the systems
compared, in NumPy and scikit-learn.

Tasks (each sized to the config's input shape):

* ``digits-thermometer``: scikit-learn's `digits` as the demo encodes them, each pixel an
  s x s block thermometer code (`cellsp.sim.datasets.encode_intensity`).
* ``digits-upsampled``: the same images upsampled bilinearly to the input shape and
  thresholded at a quarter of full intensity: smooth, thicker strokes instead of blocks.
* ``random-patterns``: in the manner of Cui, Ahmad & Hawkins (2017), random sparse input
  patterns (`PATTERN_DENSITY` of the bits on) presented many times, each presentation with
  `TRAINING_NOISE` of its active bits moved; no labels.

Figures of one system on one task and one seed (`measure`): readout accuracy (linear SVM and
logistic regression, `cellsp.sim.readout`) where there are labels; the noise curve (output
overlap against the fraction of active input bits moved, `NOISE_CURVE`), before and after
learning; sparsity; column usage (fraction of cells ever active, normalised entropy of their
activity); stability (`late_change`: the fraction of a probe input's active cells that still
change over the last learning pass). `summarise` turns per-seed figures into means and spreads.

Systems (`SYSTEMS`): the raw input; the cellular SP (`GoldenModel`, bit-exact with the
hardware); the classic SP as the cellular config's float twin (`SoftwareSP.from_config`); and
the classic SP as a user would run it (`classic_user_params`: global inhibition, htm.core's
usual parameters), optionally the best of `CLASSIC_SWEEP` per task.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from .config import SPConfig
from .datasets import encode_intensity
from .golden import GoldenModel
from .jobs import Job, JobResult, package_digest, raise_failures, run_jobs, versions
from .readout import READOUTS, readout_accuracy
from .software_sp import SoftwareSP

__all__ = ["move_bits", "output_overlap", "usage_entropy", "late_change", "encode_upsampled",
           "Task", "make_task", "TASKS", "NOISE_CURVE", "SYSTEMS", "RAW", "CELLULAR", "TWIN",
           "CLASSIC", "RawInput", "make_system", "classic_user_params", "CLASSIC_SWEEP",
           "measure", "summarise", "vary_candidates", "run_quality", "quality_job",
           "quality_jobs", "total_steps", "NOISE_AT",
           "PATTERN_DENSITY", "TRAINING_NOISE", "PATTERNS", "PATTERN_PASSES", "DIGIT_PASSES",
           "grid_candidates", "grid_steps", "shortfall", "run_grid"]

#: fractions of the active input bits moved for the noise curve
NOISE_CURVE = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
#: the noise level of the headline figure (the issue's targets)
NOISE_AT = 0.2
TASKS = ("digits-thermometer", "digits-upsampled", "random-patterns")
#: random-patterns: how many patterns, their density, the noise of each training presentation
#: and how many passes over them
PATTERNS = 100
PATTERN_DENSITY = 0.1
TRAINING_NOISE = 0.1
PATTERN_PASSES = 10
#: learning passes over the training digits (the first in order, later ones shuffled)
DIGIT_PASSES = 3
#: the most inputs a stability probe re-infers
PROBE = 300

RAW = "raw input"
CELLULAR = "cellular SP"
TWIN = "classic SP, float twin"
CLASSIC = "classic SP, as a user runs it"
SYSTEMS = (RAW, CELLULAR, TWIN, CLASSIC)

#: the classic SP's documented sweep (`--sweep`): every combination is measured over the seeds
#: and the best per task kept (accuracy where there are labels, else overlap at `NOISE_AT`).
#: Local inhibition with pools over the whole input costs about 50 ms a learning step at 32x32
#: columns (an inhibition radius of about 15), so `sweep="global"` measures the global half.
CLASSIC_SWEEP = {"local_area_density": (0.02, 0.05, 0.1),
                 "boost_strength": (0.0, 3.0),
                 "global_inhibition": (True, False)}


# ---------------------------------------------------------------------- noise and figures


def move_bits(X: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Each input with `fraction` of its active bits moved to random inactive positions (the
    number of active bits is kept)."""
    out = X.copy()
    flat = out.reshape(len(out), -1)
    for row in flat:
        on, off = np.flatnonzero(row), np.flatnonzero(~row)
        k = min(int(round(fraction * len(on))), len(off))
        if k:
            row[rng.choice(on, k, replace=False)] = False
            row[rng.choice(off, k, replace=False)] = True
    return out


def output_overlap(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Mean |A and B| / |A| over inputs whose clean output A is not empty."""
    a = clean.reshape(len(clean), -1)
    b = noisy.reshape(len(noisy), -1)
    size = a.sum(1)
    keep = size > 0
    return float(((a & b).sum(1)[keep] / size[keep]).mean()) if keep.any() else 0.0


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def usage_entropy(outputs: np.ndarray) -> float:
    """The entropy of the cells' activity (Cui et al. 2017: the sum over cells of the binary
    entropy of each cell's activation frequency), divided by its maximum at the same sparsity
    (every cell active equally often): 1.0 for uniform use, lower when a few cells do the work.
    0.0 when no cell or every cell is always active."""
    freq = outputs.reshape(len(outputs), -1).mean(0)
    mean = float(freq.mean())
    if mean <= 0.0 or mean >= 1.0:
        return 0.0
    return float(_binary_entropy(freq).sum() / (freq.size * _binary_entropy(np.array(mean))))


def late_change(before: np.ndarray, after: np.ndarray) -> float:
    """Stability: the fraction of the active cells of the same inputs that changed between two
    inferences late in learning (1 - `output_overlap`); 0.0 for a system that no longer
    changes."""
    return 1.0 - output_overlap(before, after)


# ---------------------------------------------------------------------- tasks


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of linear interpolation, pixel centres aligned."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - (pos - lo)
    m[np.arange(n_out), hi] += pos - lo
    return m


def encode_upsampled(images: np.ndarray, input_shape: tuple[int, int], max_value: float,
                     level: float = 0.25) -> np.ndarray:
    """Grey images (N, h, w) upsampled bilinearly to `input_shape` (any size) and thresholded
    at `level` of `max_value`: bit planes (N, Hin, Win)."""
    images = np.asarray(images, dtype=np.float64)
    rows = _interpolation_matrix(input_shape[0], images.shape[1])
    cols = _interpolation_matrix(input_shape[1], images.shape[2])
    return np.einsum("ij,njk,lk->nil", rows, images, cols) > level * max_value


@dataclass
class Task:
    """One task on one seed: `X` the inputs (bool, (N, *input_shape)) and `y` their labels
    (None without), the first `train` learned and used to train the readout; `lessons` the
    learning passes; `probe` the inputs re-inferred for stability; `evaluate` the inputs the
    noise curve and usage are measured on; `noisy[f]` those inputs with `f` of their bits
    moved."""

    name: str
    X: np.ndarray
    y: np.ndarray | None
    train: int
    lessons: list
    probe: np.ndarray
    evaluate: np.ndarray
    noisy: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Learning steps of one system on this task."""
        return sum(len(lesson) for lesson in self.lessons)


def make_task(name: str, input_shape: tuple[int, int], seed: int, limit: int | None = None,
              passes: int | None = None) -> Task:
    """Task `name` (one of `TASKS`) for inputs of `input_shape`, with seed `seed` choosing the
    data split (digits) or the patterns, the learning order and the noise. `limit`: only that
    many digits or patterns; `passes`: learning passes (default `DIGIT_PASSES` or
    `PATTERN_PASSES`, at least 2: stability compares the last two)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    rng = np.random.default_rng(seed)
    if name == "random-patterns":
        n = limit or PATTERNS
        passes = passes or PATTERN_PASSES
        bits = input_shape[0] * input_shape[1]
        on = max(1, round(PATTERN_DENSITY * bits))
        X = np.zeros((n, bits), bool)
        for row in X:
            row[rng.choice(bits, on, replace=False)] = True
        X = X.reshape((n,) + tuple(input_shape))
        lessons = [move_bits(X[rng.permutation(n)], TRAINING_NOISE, rng) for _ in range(passes)]
        y, train, evaluate = None, n, X
    else:
        digits = load_digits()
        encode = encode_intensity if name == "digits-thermometer" else encode_upsampled
        X = encode(digits.images, tuple(input_shape), 16.0)
        order = rng.permutation(len(X))[:limit]
        X, y = X[order], digits.target[order].astype(np.int64)
        train = len(X) * 2 // 3
        passes = passes or DIGIT_PASSES
        lessons = [X[:train]] + [X[:train][rng.permutation(train)] for _ in range(passes - 1)]
        evaluate = X[train:]
    if passes < 2:
        raise ValueError(f"passes = {passes}: stability compares the last two passes; use 2 "
                         f"or more")
    noisy = {f: move_bits(evaluate, f, rng) for f in NOISE_CURVE}
    return Task(name, X, y, train, lessons, X[:min(train, PROBE)], evaluate, noisy)


# ---------------------------------------------------------------------- systems


class RawInput:
    """The raw input as a system: its output is its input, and it learns nothing."""

    def run(self, X, *, learn: bool, progress=None) -> np.ndarray:
        """The inputs themselves (a copy)."""
        if progress:
            progress(len(X))
        return np.array(X, dtype=bool)


def classic_user_params(config: SPConfig, seed: int, **overrides) -> dict:
    """The classic SP as a user would run it on `config`'s inputs and cell count: htm.core's
    default parameters (`SoftwareSP`'s), with global inhibition, potential pools spanning the
    whole input (potential_pct 0.85) and the hotgym example's density (0.05) and boost
    strength (3.0); `overrides` replace any of them (the sweep). A density that would select
    no column of a small array is raised to one column."""
    params = dict(input_dimensions=tuple(config.input_shape),
                  column_dimensions=tuple(config.cell_shape),
                  potential_radius=max(config.input_shape), potential_pct=0.85,
                  global_inhibition=True, local_area_density=0.05, boost_strength=3.0,
                  seed=seed)
    params.update(overrides)
    columns = config.cell_shape[0] * config.cell_shape[1]
    params["local_area_density"] = max(params["local_area_density"], 1.0 / columns)
    return params


def make_system(name: str, config: SPConfig, classic: dict | None = None):
    """A fresh system `name` (one of `SYSTEMS`) for `config` (whose seed it takes): an object
    with `run(X, learn=..., progress=None)`. `classic`: the classic user SP's overrides (a
    candidate of `CLASSIC_SWEEP`)."""
    if name == RAW:
        return RawInput()
    if name == CELLULAR:
        return GoldenModel(config)
    if name == TWIN:
        return SoftwareSP.from_config(config)
    if name == CLASSIC:
        return SoftwareSP(**classic_user_params(config, config.seed, **(classic or {})))
    raise ValueError(f"unknown system {name!r}; systems: {', '.join(SYSTEMS)}")


def measure(system, task: Task, progress: Callable[[int], object] | None = None) -> dict:
    """The figures of a fresh `system` on `task` (one seed); see the module docstring.
    `progress(n)` hears the learning steps as they are done."""
    before = _noise_curve(system, task)
    for lesson in task.lessons[:-1]:
        system.run(lesson, learn=True, progress=progress)
    probe_before = system.run(task.probe, learn=False)
    system.run(task.lessons[-1], learn=True, progress=progress)
    probe_after = system.run(task.probe, learn=False)
    outputs = system.run(task.X, learn=False)
    figures = {"noise_before": before, "noise_after": _noise_curve(system, task),
               "sparsity": float(outputs.mean()),
               "cells_used": float(outputs.reshape(len(outputs), -1).any(0).mean()),
               "usage_entropy": usage_entropy(outputs),
               "late_change": late_change(probe_before, probe_after)}
    figures["overlap_at_noise"] = figures["noise_after"][str(NOISE_AT)]
    if task.y is not None:
        for readout in READOUTS:
            figures["accuracy_" + readout.replace(" ", "_")] = readout_accuracy(
                outputs, task.y, task.train, readout)
    return figures


def _noise_curve(system, task: Task) -> dict:
    clean = system.run(task.evaluate, learn=False)
    return {str(f): output_overlap(clean, system.run(task.noisy[f], learn=False))
            for f in NOISE_CURVE}


def summarise(per_seed: list[dict]) -> dict:
    """Mean and spread (sample standard deviation; 0 for one seed) of each figure over the
    seeds, as {figure: {"mean", "std", "values"}}; a curve (a dict of figures) gives a dict of
    those."""
    out = {}
    for key, first in per_seed[0].items():
        if isinstance(first, dict):
            out[key] = summarise([s[key] for s in per_seed])
            continue
        values = [float(s[key]) for s in per_seed]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out[key] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return out


def _score(summary: dict) -> float:
    """What makes a sweep candidate best: accuracy (linear SVM) where there are labels, else
    the overlap at `NOISE_AT`."""
    key = "accuracy_linear_SVM" if "accuracy_linear_SVM" in summary else "overlap_at_noise"
    return summary[key]["mean"]


def vary_candidates(config: SPConfig, vary: dict[str, list]) -> list[tuple[str, SPConfig]]:
    """The cellular configs of a `--vary` sweep: each value of each field in turn, the other
    fields as in `config` (one field at a time, not their product), as (label, config); a
    value that makes an invalid config raises `ConfigError` naming the field."""
    out = []
    for name, values in vary.items():
        for value in values:
            out.append((f"{CELLULAR}, {name}={value}", config.replace(**{name: value})))
    return out


def _classic_candidates(sweep: bool | str) -> list[tuple[str, dict]]:
    if not sweep:
        return [("", {})]
    keys = list(CLASSIC_SWEEP)
    combos = [dict(zip(keys, combo)) for combo in itertools.product(*CLASSIC_SWEEP.values())]
    if sweep == "global":
        combos = [c for c in combos if c["global_inhibition"]]
    return [(", ".join(f"{k}={v}" for k, v in c.items()), c) for c in combos]


def quality_job(config: dict, task: str, seed: int, limit: int | None, passes: int | None,
                system: str, classic: dict | None = None) -> dict:
    """The figures (`measure`) of a fresh `system` (one of `SYSTEMS`) built from `config` (a
    dict: the seed already added) on task `task` of seed `seed`, BLAS held to one thread: one
    job of `run_quality` (`cellsp.sim.jobs`)."""
    with threadpool_limits(limits=1):
        made = make_task(task, tuple(config["input_shape"]), seed, limit, passes)
        return measure(make_system(system, SPConfig.from_dict(config), classic), made)


def quality_jobs(config: SPConfig, seeds: int = 5, tasks=TASKS, sweep: bool | str = False,
                 vary: dict[str, list] | None = None, limit: int | None = None,
                 passes: int | None = None) -> list[tuple[str, int, str, Job]]:
    """The jobs of `run_quality`: (task, seed, system label, job), one per system on each task
    and seed; each job's key holds the sources of `cellsp.sim` and the numerical libraries'
    versions."""
    cellular = [(CELLULAR, config)] + vary_candidates(config, vary or {})
    key = {"sim": package_digest("cellsp.sim"), "versions": versions("numpy", "scikit-learn")}
    out = []
    for task_name in tasks:
        for s in range(seeds):
            seeded = config.replace(seed=config.seed + s)
            runs = [(RAW, RAW, seeded, None)]
            runs += [(label, CELLULAR, c.replace(seed=c.seed + s), None) for label, c in cellular]
            runs.append((TWIN, TWIN, seeded, None))
            runs += [(CLASSIC + (f" ({label})" if label else ""), CLASSIC, seeded, params)
                     for label, params in _classic_candidates(sweep)]
            for label, system, system_config, classic in runs:
                arguments = {"config": system_config.to_dict(), "task": task_name, "seed": s,
                             "limit": limit, "passes": passes, "system": system,
                             "classic": classic}
                out.append((task_name, s, label, Job("cellsp.sim.quality:quality_job",
                                                     arguments, key,
                                                     f"{task_name} seed {s}: {label}")))
    return out


def run_quality(config: SPConfig, seeds: int = 5, tasks=TASKS, sweep: bool | str = False,
                vary: dict[str, list] | None = None, limit: int | None = None,
                passes: int | None = None, progress: Callable[[int], object] | None = None,
                log: Callable[[str], object] | None = None, at_once: int | None = 0,
                scheduler: str | None = None, cache: bool | Path = False) -> dict:
    """The quality benchmark of `config` (see the module docstring) over `seeds` seeds: seed
    s runs the config with seed ``config.seed + s`` on the data split, patterns and noise of
    seed s. `sweep` (True or "all", or "global" for its global-inhibition half): the classic
    user SP is the best of `CLASSIC_SWEEP` per task; `vary`:
    cellular candidates (`vary_candidates`) measured beside the config. `limit`, `passes`:
    smaller tasks (`make_task`). Each system on each task and seed is one job
    (`quality_jobs`), run by `cellsp.sim.jobs.run_jobs` with `at_once`, `scheduler` and
    `cache` (default: in this process, no cache); the figures do not depend on where they
    ran. `progress(n)` hears learning steps done (of `total_steps`) as jobs finish,
    `log(line)` each job's failed tries and each system's summary line. Raises `JobsError`
    naming the jobs that failed every try (the others are cached, if `cache`). Returns a
    JSON-ready dict: ``{"tasks": {task: {"systems": {system: summary}, "sweep": {...}}},
    ...}``."""
    log = log or (lambda line: None)
    cellular = [(CELLULAR, config)] + vary_candidates(config, vary or {})
    planned = quality_jobs(config, seeds, tasks, sweep, vary, limit, passes)
    steps = {name: make_task(name, config.input_shape, 0, limit, passes).steps for name in tasks}

    def finished(result: JobResult) -> None:
        for failure in result.failures:
            log(f"  {result.job.name}: failed on {failure['worker']}: "
                f"{failure['error'].strip().splitlines()[-1]}")
        if progress:
            progress(steps[result.job.arguments["task"]])

    results = run_jobs([job for *_, job in planned], at_once=at_once, scheduler=scheduler,
                       cache=cache, progress=finished)
    raise_failures(results)
    figures: dict[str, dict[str, list]] = {}
    for (task_name, _, label, _), result in zip(planned, results):
        figures.setdefault(task_name, {}).setdefault(label, []).append(result.value)
    out = {}
    for task_name in tasks:
        summaries = {label: summarise(figs) for label, figs in figures[task_name].items()}
        systems = {label: summaries[label] for label in (RAW, CELLULAR, TWIN)}
        systems.update({label: summaries[label] for label, _ in cellular[1:]})
        entry = {"systems": systems}
        classic_labels = [lab for lab in summaries if lab.startswith(CLASSIC)]
        best = max(classic_labels, key=lambda lab: _score(summaries[lab]))
        systems[CLASSIC] = summaries[best]
        if sweep:
            entry["classic_sweep"] = {lab: summaries[lab] for lab in classic_labels}
            entry["classic_best"] = best
        out[task_name] = entry
        for label, summary in systems.items():
            log(f"  {task_name:18s} {label:40s} " + _line(summary))
    return {"tasks": out}


def _line(summary: dict) -> str:
    """A summary in one line: accuracy (SVM), overlap at `NOISE_AT`, cells used."""
    parts = []
    if "accuracy_linear_SVM" in summary:
        a = summary["accuracy_linear_SVM"]
        parts.append(f"SVM {a['mean']:.1%} ± {a['std']:.1%}")
    o = summary["overlap_at_noise"]
    parts.append(f"overlap@{NOISE_AT:.0%} {o['mean']:.3f} ± {o['std']:.3f}")
    parts.append(f"cells used {summary['cells_used']['mean']:.1%}")
    return ", ".join(parts)


def total_steps(config: SPConfig, seeds: int, tasks=TASKS, sweep: bool | str = False,
                vary: dict[str, list] | None = None, limit: int | None = None,
                passes: int | None = None) -> int:
    """Learning steps `run_quality` takes with these arguments (for a progress bar)."""
    # the raw input, the cellular SP and its candidates, the float twin, the classic ones
    learners = 3 + len(vary_candidates(config, vary or {})) + len(_classic_candidates(sweep))
    steps = sum(make_task(name, config.input_shape, 0, limit, passes).steps for name in tasks)
    return steps * seeds * learners


# ---------------------------------------------------------------------- multi-field grid


def grid_candidates(config: SPConfig, grid: dict[str, list]) -> list[tuple[str, SPConfig]]:
    """The cellular configs of a `--grid` sweep: every combination of the values of the fields
    in `grid` (their cartesian product, in order: the last field varies fastest), the other
    fields as in `config`, as (label, config); a combination that makes an invalid config
    raises `ConfigError` naming the field."""
    names = list(grid)
    out = []
    for values in itertools.product(*grid.values()):
        changes = dict(zip(names, values))
        label = f"{CELLULAR}, " + ", ".join(f"{k}={v}" for k, v in changes.items())
        out.append((label, config.replace(**changes)))
    return out


def grid_steps(config: SPConfig, grid: dict[str, list], seeds: int, tasks=TASKS,
               sweep: bool | str = False, limit: int | None = None,
               passes: int | None = None) -> int:
    """Learning steps `run_grid` takes with these arguments (for a progress bar)."""
    # the raw input, the candidates, the classic ones
    learners = 1 + len(grid_candidates(config, grid)) + len(_classic_candidates(sweep))
    steps = sum(make_task(name, config.input_shape, 0, limit, passes).steps for name in tasks)
    return steps * seeds * learners


def shortfall(candidate: dict, raw: dict, classic: dict) -> dict:
    """How far one system's summaries (`candidate`, {task: summary}) fall short of the issue's
    targets on each task, means over the seeds: overlap at `NOISE_AT` against the raw input's
    and the classic SP's (`raw`, `classic`: {task: summary}), accuracy (linear SVM) against
    the classic SP's where there are labels, cells used against 95%; each
    {target: max(0, against - value)}, per task, and "total" their sum over the tasks."""
    out, total = {}, 0.0
    for task, s in candidate.items():
        o = s["overlap_at_noise"]["mean"]
        gaps = {"overlap >= raw input": raw[task]["overlap_at_noise"]["mean"] - o,
                "overlap >= classic SP": classic[task]["overlap_at_noise"]["mean"] - o}
        if "accuracy_linear_SVM" in s:
            gaps["accuracy >= classic SP"] = (classic[task]["accuracy_linear_SVM"]["mean"]
                                              - s["accuracy_linear_SVM"]["mean"])
        gaps["cells used >= 95%"] = 0.95 - s["cells_used"]["mean"]
        out[task] = {k: max(0.0, v) for k, v in gaps.items()}
        total += sum(out[task].values())
    out["total"] = total
    return out


def run_grid(config: SPConfig, grid: dict[str, list], seeds: int = 2, tasks=TASKS,
             sweep: bool | str = False, limit: int | None = None, passes: int | None = None,
             progress: Callable[[int], object] | None = None,
             log: Callable[[str], object] | None = None) -> dict:
    """A screen of cellular configs: every `grid_candidates(config, grid)` candidate measured
    over `seeds` seeds on `tasks` (seed s as in `run_quality`: config seed + s, the data split,
    patterns and noise of seed s), beside the raw input and the classic SP as a user runs it
    (the best of `CLASSIC_SWEEP` per task with `sweep`, as in `run_quality`); the float twin
    is not run. Returns a JSON-ready dict: ``{"tasks": {task: {"systems": {label: summary}}},
    "ranking": [{"label", "config", "shortfall"}, ...]}``, the candidates ordered by their
    total `shortfall` from the targets (0: every target met on every task)."""
    log = log or (lambda line: None)
    candidates = grid_candidates(config, grid)
    classic = _classic_candidates(sweep)
    results = {}
    for task_name in tasks:
        per_seed: dict[str, list] = {}
        for s in range(seeds):
            task = make_task(task_name, config.input_shape, s, limit, passes)
            seeded = config.replace(seed=config.seed + s)
            runs = [(RAW, make_system(RAW, seeded))]
            runs += [(CLASSIC + (f" ({label})" if label else ""),
                      make_system(CLASSIC, seeded, params)) for label, params in classic]
            runs += [(label, make_system(CELLULAR, c.replace(seed=c.seed + s)))
                     for label, c in candidates]
            for label, system in runs:
                per_seed.setdefault(label, []).append(measure(system, task, progress))
        summaries = {label: summarise(figs) for label, figs in per_seed.items()}
        classic_labels = [lab for lab in summaries if lab.startswith(CLASSIC)]
        best = max(classic_labels, key=lambda lab: _score(summaries[lab]))
        systems = {RAW: summaries[RAW], CLASSIC: summaries[best]}
        systems.update({label: summaries[label] for label, _ in candidates})
        results[task_name] = {"systems": systems, "classic_best": best}
        for label, summary in systems.items():
            log(f"  {task_name:18s} {label:40s} " + _line(summary))
    raw = {t: e["systems"][RAW] for t, e in results.items()}
    best_classic = {t: e["systems"][CLASSIC] for t, e in results.items()}
    ranking = [{"label": label, "config": c.to_dict(),
                "shortfall": shortfall({t: e["systems"][label] for t, e in results.items()},
                                       raw, best_classic)}
               for label, c in candidates]
    ranking.sort(key=lambda r: r["shortfall"]["total"])
    return {"tasks": results, "ranking": ranking}
