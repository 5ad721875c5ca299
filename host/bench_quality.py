"""`cellsp bench quality`: the SP quality benchmark on the golden model (bit-exact with the
hardware, so no simulator runs), its JSON and its report folder (Markdown tables of means and
spreads over the seeds, noise-curve plots). The tasks, figures and systems are
`cellsp.sim.quality`'s."""

from __future__ import annotations

import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from cellsp.sim import quality
from cellsp.sim.bench import machine_info
from cellsp.sim.config import SPConfig

from .files import atomic_path, write_text

__all__ = ["bench_quality", "write_report", "targets", "table_lines", "bench_grid", "grid_lines",
           "write_grid_report"]

#: the figures of a table, (key, label, format: "pct" or "num"), in order
_ROWS = [("accuracy_linear_SVM", "readout accuracy, linear SVM", "pct"),
         ("accuracy_logistic_regression", "readout accuracy, logistic regression", "pct"),
         *[(f"noise_after/{f}", f"output overlap, {f:.0%} bits moved", "num")
           for f in quality.NOISE_CURVE if f > 0],
         (f"noise_before/{quality.NOISE_AT}",
          f"output overlap, {quality.NOISE_AT:.0%} moved, before learning", "num"),
         ("sparsity", "active per input", "pct"),
         ("cells_used", "cells ever active", "pct"),
         ("usage_entropy", "usage entropy (1 = uniform)", "num"),
         ("late_change", "late change (0 = stable)", "num")]


def bench_quality(config: SPConfig, seeds: int = 5, tasks=quality.TASKS,
                  sweep: bool | str = False,
                  vary: dict | None = None, limit: int | None = None,
                  passes: int | None = None, board: str | None = None, progress=None,
                  log=None, at_once: int | None = 0, scheduler: str | None = None,
                  cache: bool | Path = False) -> dict:
    """Run `cellsp.sim.quality.run_quality` (BLAS held to one thread, so that several
    benchmarks can share a machine; its jobs where `at_once`, `scheduler` and `cache` say,
    `cellsp.sim.jobs.run_jobs`) and return its JSON-ready dict with what was measured:
    the config, the board it stands for, the sizes, the machine, the seconds taken and whether
    the config meets the quality targets (`targets`)."""
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        data = quality.run_quality(config, seeds=seeds, tasks=tasks, sweep=sweep, vary=vary,
                                   limit=limit, passes=passes, progress=progress, log=log,
                                   at_once=at_once, scheduler=scheduler, cache=cache)
    sizes = {"digits": limit or "all 1797, two thirds train",
             "digit_passes": passes or quality.DIGIT_PASSES,
             "patterns": limit or quality.PATTERNS,
             "pattern_passes": passes or quality.PATTERN_PASSES,
             "pattern_density": quality.PATTERN_DENSITY,
             "training_noise": quality.TRAINING_NOISE,
             "noise_curve": list(quality.NOISE_CURVE)}
    out = {"benchmark": "quality", "config": config.to_dict(), "config_hash": config.hash,
           "board": board, "seeds": seeds, "sweep": sweep, "vary": vary or {},
           "sizes": sizes, "machine": machine_info(),
           "jobs": {"at_once": at_once, "scheduler": scheduler},
           "seconds": round(time.perf_counter() - t0, 1), **data}
    out["targets"] = targets(out)
    return out


def _figure(summary: dict, key: str) -> dict | None:
    node = summary
    for part in key.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def targets(data: dict) -> dict:
    """The issue's targets per task, means over the seeds: overlap at 20% at least the raw
    input's and the classic user SP's, accuracy (linear SVM) at least the classic user SP's,
    at least 95% of the cells used; each {"met": bool, "value", "against"}."""
    out = {}
    for task, entry in data["tasks"].items():
        s = entry["systems"]
        cell, raw, classic = s[quality.CELLULAR], s[quality.RAW], s[quality.CLASSIC]
        o = cell["overlap_at_noise"]["mean"]
        checks = {"overlap >= raw input": (o, raw["overlap_at_noise"]["mean"]),
                  "overlap >= classic SP": (o, classic["overlap_at_noise"]["mean"])}
        if "accuracy_linear_SVM" in cell:
            checks["accuracy >= classic SP"] = (cell["accuracy_linear_SVM"]["mean"],
                                                classic["accuracy_linear_SVM"]["mean"])
        checks["cells used >= 95%"] = (cell["cells_used"]["mean"], 0.95)
        out[task] = {name: {"met": value >= against, "value": value, "against": against}
                     for name, (value, against) in checks.items()}
    return out


def _cell(figure: dict | None, fmt: str) -> str:
    if figure is None:
        return ""
    if fmt == "pct":
        return f"{figure['mean']:.1%} ± {figure['std']:.1%}"
    return f"{figure['mean']:.3f} ± {figure['std']:.3f}"


def table_lines(entry: dict) -> list[str]:
    """One task's Markdown table: a row per figure, a column per system (mean ± spread)."""
    names = list(entry["systems"])
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, fmt in _ROWS:
        cells = [_cell(_figure(entry["systems"][n], key), fmt) for n in names]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_report(data: dict, out_dir: Path) -> list[str]:
    """Write `report.md` and the noise-curve plots of `data` (`bench_quality`'s) in `out_dir`
    (created if missing); return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(data, out_dir)
    cfg = data["config"]
    lines = ["# cellsp SP quality report", "",
             f"Config `{data['config_hash']}`"
             + (f" (board {data['board']})" if data.get("board") else "")
             + f", {cfg['cell_shape'][0]}x{cfg['cell_shape'][1]} cells on "
               f"{cfg['input_shape'][0]}x{cfg['input_shape'][1]} inputs; means ± sample "
               f"standard deviation over {data['seeds']} seeds (config seed + s, data split "
               f"and noise of seed s); {data['seconds']:.0f} s on {data['machine']['cores']} "
               f"cores, {data['machine']['date']}.", "",
             _sizes_line(data["sizes"]), ""]
    for task, entry in data["tasks"].items():
        lines += [f"## {task}", ""] + table_lines(entry) + [""]
        if entry.get("classic_best"):
            lines += [f"Classic SP as a user runs it: the best of the sweep, "
                      f"{entry['classic_best']}.", ""]
        met = data["targets"][task]
        lines += ["Targets: " + "; ".join(
            f"{name} {'met' if t['met'] else 'not met'} ({t['value']:.3f} against "
            f"{t['against']:.3f})" for name, t in met.items()) + ".", ""]
    lines += [f"![{p}]({p})" for p in plots]
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return ["report.md"] + plots


def _sizes_line(sizes: dict) -> str:
    return (f"Sizes: digits: {sizes['digits']}, {sizes['digit_passes']} learning passes; "
            f"{sizes['patterns']} random patterns with {sizes['pattern_density']:.0%} of the "
            f"bits on, {sizes['pattern_passes']} passes, each presentation with "
            f"{sizes['training_noise']:.0%} of its active bits moved; noise curve at "
            f"{', '.join(f'{f:g}' for f in sizes['noise_curve'])} of the active bits moved.")


def _plots(data: dict, out_dir: Path) -> list[str]:
    # matplotlib is imported only when a report is drawn: it takes about a second to import
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(data["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False)
    levels = list(quality.NOISE_CURVE)
    for ax, task in zip(axes[0], tasks):
        for k, (name, s) in enumerate(data["tasks"][task]["systems"].items()):
            color = f"C{k}"
            for when, style in (("noise_after", "-"), ("noise_before", ":")):
                means = [s[when][str(f)]["mean"] for f in levels]
                stds = [s[when][str(f)]["std"] for f in levels]
                if when == "noise_before" and name == quality.RAW:
                    continue
                ax.errorbar(levels, means, yerr=stds, fmt=style, marker="o", markersize=3,
                            color=color, capsize=2,
                            label=name if when == "noise_after" else None)
        ax.set_title(f"{task} (dotted: before learning)")
        ax.set_xlabel("fraction of active input bits moved")
        ax.set_ylabel("output overlap with the clean input's")
        ax.set_ylim(0, 1.02)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    name = "noise_curves.png"
    with atomic_path(out_dir / name) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return [name]


def bench_grid(config: SPConfig, grid: dict, seeds: int = 2, tasks=quality.TASKS,
               sweep: bool | str = False, limit: int | None = None, passes: int | None = None,
               board: str | None = None, progress=None) -> dict:
    """Run `cellsp.sim.quality.run_grid` (BLAS held to one thread) and return its JSON-ready
    dict with what was measured: the base config, the grid, the board, the machine and the
    seconds taken."""
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        data = quality.run_grid(config, grid, seeds=seeds, tasks=tasks, sweep=sweep,
                                limit=limit, passes=passes, progress=progress)
    return {"benchmark": "quality-grid", "config": config.to_dict(),
            "config_hash": config.hash, "board": board, "seeds": seeds, "sweep": sweep,
            "grid": grid, "limit": limit, "passes": passes, "machine": machine_info(),
            "seconds": round(time.perf_counter() - t0, 1), **data}


def grid_lines(data: dict) -> list[str]:
    """`bench_grid`'s ranking as a Markdown table: a row per candidate, best first, with its
    overlap at `NOISE_AT`, accuracy (linear SVM) and cells used per task (means over the
    seeds) and its total shortfall from the targets; the raw input and the classic SP above."""
    tasks = list(data["tasks"])
    labelled = {t: "accuracy_linear_SVM" in data["tasks"][t]["systems"][quality.RAW]
                for t in tasks}
    head = ["candidate", "shortfall"] + [
        f"{t}: overlap / {'SVM / ' if labelled[t] else ''}used" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def cells(label: str) -> list[str]:
        out = []
        for t in tasks:
            s = data["tasks"][t]["systems"][label]
            parts = [f"{s['overlap_at_noise']['mean']:.3f}"]
            if "accuracy_linear_SVM" in s:
                parts.append(f"{s['accuracy_linear_SVM']['mean']:.1%}")
            parts.append(f"{s['cells_used']['mean']:.1%}")
            out.append(" / ".join(parts))
        return out

    for label in (quality.RAW, quality.CLASSIC):
        lines.append(f"| {label} | | " + " | ".join(cells(label)) + " |")
    prefix = quality.CELLULAR + ", "
    for row in data["ranking"]:
        lines.append(f"| {row['label'].removeprefix(prefix)} | "
                     f"{row['shortfall']['total']:.3f} | " + " | ".join(cells(row["label"]))
                     + " |")
    return lines


def write_grid_report(data: dict, out_dir: Path) -> list[str]:
    """Write `report.md` of `bench_grid`'s `data` in `out_dir` (created if missing): the
    ranking table (`grid_lines`); return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = ", ".join(f"{k} = {', '.join(map(str, v))}" for k, v in data["grid"].items())
    lines = ["# cellsp SP quality grid", "",
             f"Every combination of {grid} around config `{data['config_hash']}`"
             + (f" (board {data['board']})" if data.get("board") else "")
             + f"; means over {data['seeds']} seeds; {data['seconds']:.0f} s on "
               f"{data['machine']['cores']} cores, {data['machine']['date']}. Shortfall: the "
               f"sum over the tasks of how far each target is missed (overlap at "
               f"{quality.NOISE_AT:.0%} against the raw input's and the classic SP's, "
               f"accuracy against the classic SP's, cells used against 95%); 0 meets them "
               f"all.", ""] + grid_lines(data)
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return ["report.md"]
