"""`cellsp demo`, the main job: the hardware SP (the cell array in Verilator, behind the host
driver and the protocol engine) learns scikit-learn's `digits`, then infers; every output bit is
checked against the golden model; the classic software SP runs on the same data; a table and a
report folder (Markdown, PNG plots, summary.json) compare them with the raw input. The
software SP runs twice: as the cellular config's float twin (`SoftwareSP.from_config`) and as a
user would run it (`cellsp.sim.quality.classic_user_params`: global inhibition, htm.core's
usual parameters)."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.compare import compare_run
from cellsp.sim.datasets import load_digits_binary
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.quality import NOISE_CURVE, classic_user_params, move_bits, output_overlap
from cellsp.sim.readout import READOUTS, readout_accuracy
from cellsp.sim.software_sp import SoftwareSP

from . import targets
from .files import UsageError, atomic_path, output_dir, write_text

__all__ = ["run_demo", "load_demo_data", "DemoData", "DemoResult", "no_bar", "move_bits",
           "output_overlap", "NOISE_LEVELS", "MIN_DIGITS", "TWIN", "USER"]

#: the noise levels of the table; the report's noise curve has `NOISE_CURVE`'s as well
NOISE_LEVELS = (0.1, 0.2, 0.4)
#: every noise level the demo runs, in increasing order (0 is the clean input itself)
_NOISY_LEVELS = tuple(sorted(set(NOISE_LEVELS) | set(NOISE_CURVE) - {0.0}))
#: the two software SPs: the cellular config's float twin and the classic SP as a user runs it
TWIN, USER = "software SP (twin)", "software SP (user)"
#: the fewest digits a demo runs on (the report shows 8; two thirds train the readout)
MIN_DIGITS = 10


class _Hardware:
    """The array behind the driver, mirrored step for step by the golden model."""

    def __init__(self, driver, golden):
        self.driver, self.golden = driver, golden
        self.mismatches = 0
        self.checked = 0
        self.first = None

    def run(self, X, *, learn, progress=None, what=""):
        out, cycles = self.driver.run(X, learn=learn, window=8, progress=progress)
        expected = self.golden.run(X, learn=learn)
        report = compare_run(expected, out, limit=1)
        self.mismatches += report.count
        self.checked += out.size
        if report and self.first is None:
            self.first = f"{what} {report.messages[0]}"
        return out, cycles


def no_bar(total: int, desc: str):
    """A progress bar factory that shows nothing: a context yielding an `update(n)` that
    ignores its count (what `run_demo` uses when the caller passes no `bar`)."""
    return nullcontext(lambda n: None)


@dataclass
class DemoData:
    """The digits of one demo run: `X` (bit planes) and `y` (labels) in the run's order, the
    first `train` of them for learning and training the readout; `noisy` maps each noise
    level (`NOISE_LEVELS` and the curve's, `NOISE_CURVE`) to the test digits with that
    fraction of their bits moved; `lessons` are
    the learning passes (the first in order, later ones shuffled)."""

    X: np.ndarray
    y: np.ndarray
    train: int
    noisy: dict
    lessons: list

    def describe(self, config: SPConfig) -> str:
        """One line: how many digits, their shape and density."""
        return (f"{len(self.X)} digits as {config.input_shape[0]}x{config.input_shape[1]} bit "
                f"planes ({self.X.mean():.1%} bits on)")


def load_demo_data(config: SPConfig, passes: int = 3, seed: int = 0,
                   limit: int | None = None) -> DemoData:
    """The digits a demo of `config` runs on, checked before any model is built: at least one
    learning pass, at least `MIN_DIGITS` digits, two kinds among the training ones
    (`UsageError` otherwise). `limit`: only the first digits (quick runs)."""
    if passes < 1:
        raise UsageError(f"passes = {passes}: the SPs need at least one learning pass")
    if limit is not None and limit < MIN_DIGITS:
        raise UsageError(f"limit = {limit}: use at least {MIN_DIGITS} digits (the readout "
                         f"trains on two thirds of them and tests on the rest)")
    X, y = load_digits_binary(config.input_shape)
    order = np.random.default_rng(config.seed).permutation(len(X))
    X, y = X[order][:limit], y[order][:limit]
    train = len(X) * 2 // 3
    if len(set(y[:train].tolist())) < 2:
        raise UsageError(f"the first {train} of the {len(X)} digits are all {y[0]}s: the readout "
                         f"needs two kinds to learn from; use a larger --limit")
    rng = np.random.default_rng(seed)
    noisy = {f: move_bits(X[train:], f, rng) for f in NOISE_LEVELS}
    lessons = [X[:train]] + [X[:train][rng.permutation(train)] for _ in range(passes - 1)]
    # the curve's other levels are drawn after the lessons, so that neither the table's
    # levels nor the lessons depend on them
    noisy.update({f: move_bits(X[train:], f, rng) for f in _NOISY_LEVELS if f not in noisy})
    noisy = {f: noisy[f] for f in _NOISY_LEVELS}
    return DemoData(X, y, train, noisy, lessons)


@dataclass
class DemoResult:
    """What a demo run found: `summary` (as written to summary.json), `table` (the comparison
    table's lines, as printed), `first_difference` (the first output or state difference from
    the golden model, or None), and the files written in `out_dir`."""

    summary: dict
    table: list[str]
    first_difference: str | None
    out_dir: Path
    plots: list[str]

    @property
    def bit_exact(self) -> bool:
        """Whether every output bit and the final state matched the golden model."""
        return self.summary["bit_exact"]

    def check_line(self) -> str:
        """The bit-exact check, in one line."""
        s = self.summary
        return (f"bit-exact check: {s['output_bits_checked']:,} output bits and the whole state "
                f"against the golden model: {s['output_mismatches']} output mismatches, "
                f"{s['state_differences']} state differences"
                + ("" if s["bit_exact"] else f"; first: {self.first_difference}"))


def _run_hardware(hw: _Hardware, data: DemoData, bar) -> dict:
    """The hardware SP's outputs, final state and speed on `data` (learning passes, then
    inference on every digit and on the noisy test digits), each output checked by `hw`."""
    X, train = data.X, data.train
    with hw.driver:
        t0 = time.perf_counter()
        with bar(len(data.lessons) * train, "hardware: learning") as update:
            for p, lesson in enumerate(data.lessons):
                hw.run(lesson, learn=True, progress=update, what=f"learning pass {p + 1},")
        learn_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with bar(len(X), "hardware: inferring") as update:
            out, cycles = hw.run(X, learn=False, progress=update, what="inference,")
        infer_s = time.perf_counter() - t0
        noisy_out = {}
        with bar(len(data.noisy) * (len(X) - train), "hardware: noisy inputs") as update:
            for f in data.noisy:
                noisy_out[f], _ = hw.run(data.noisy[f], learn=False, progress=update,
                                         what=f"{f:.0%} noise,")
        state = hw.driver.read_state()
    return {"outputs": out, "noisy": noisy_out, "state": state,
            "learn_inputs_per_s": len(data.lessons) * train / learn_s,
            "infer_inputs_per_s": len(X) / infer_s, "cycles_per_input": float(np.mean(cycles))}


def _run_software(sw: SoftwareSP, name: str, data: DemoData, bar) -> dict:
    """The outputs and speed of the software SP `sw` (called `name`) on `data`, as
    `_run_hardware`'s."""
    X, train = data.X, data.train
    t0 = time.perf_counter()
    with bar(len(data.lessons) * train, f"{name}: learning") as update:
        for lesson in data.lessons:
            sw.run(lesson, learn=True, progress=update)
    learn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = sw.run(X, learn=False)
    infer_s = time.perf_counter() - t0
    noisy = {f: sw.run(data.noisy[f], learn=False) for f in data.noisy}
    return {"outputs": out, "noisy": noisy,
            "learn_inputs_per_s": len(data.lessons) * train / learn_s,
            "infer_inputs_per_s": len(X) / infer_s}


def _quality(outputs: np.ndarray, noisy: dict, data: DemoData) -> dict:
    """Readout accuracies, noise robustness and sparsity of `outputs` (one per digit) and
    `noisy` (the test digits' outputs at each noise level of `data.noisy`)."""
    y, train = data.y, data.train
    return {"readout_accuracy": readout_accuracy(outputs, y, train),
            "readout_accuracy_" + READOUTS[1].replace(" ", "_"):
                readout_accuracy(outputs, y, train, READOUTS[1]),
            "noise_overlap": {f: output_overlap(outputs[train:], noisy[f])
                              for f in noisy},
            "sparsity": float(outputs.mean())}


def run_demo(data: DemoData, geometry: ArrayGeometry, out_dir: Path = Path("cellsp-report"),
             target: str = "verilator", log=None, bar=no_bar) -> DemoResult:
    """Run the main job (see the module docstring) on `data` (`load_demo_data`) with the
    array of `geometry` (its config, cells per PE, serial or count-parallel) and write the
    report in `out_dir` (checked before the model is built). `log(line)` hears what is being
    done; `bar(total, desc)` makes a progress bar: a context yielding `update(n)`."""
    out_dir = output_dir(out_dir, "--out")
    log = log or (lambda line: None)
    config = geometry.config

    t0 = time.perf_counter()
    driver = targets.open_driver(target, geometry, log=lambda msg: log(f"  {msg}"))
    log(f"  connected to the {target} model in {time.perf_counter() - t0:.1f} s")
    hw = _Hardware(driver, GoldenModel(config))
    driver.load_state(hw.golden.state())
    hw_name = "hardware (Verilator)" if target == "verilator" else f"hardware ({target})"
    results = {hw_name: _run_hardware(hw, data, bar),
               TWIN: _run_software(SoftwareSP.from_config(config), TWIN, data, bar),
               USER: _run_software(SoftwareSP(**classic_user_params(config, config.seed)),
                                   USER, data, bar)}
    state_diff = hw.golden.state().differences(results[hw_name]["state"])

    X, train = data.X, data.train
    raw = _quality(X, data.noisy, data)
    rows = {}
    for name, r in results.items():
        o = r["outputs"]
        rows[name] = {**_quality(o, r["noisy"], data),
                      "cells_ever_active": float(o.reshape(len(o), -1).any(0).mean()),
                      "learn_inputs_per_s": r["learn_inputs_per_s"],
                      "infer_inputs_per_s": r["infer_inputs_per_s"]}
    rows[hw_name]["cycles_per_input"] = results[hw_name]["cycles_per_input"]
    ok = hw.mismatches == 0 and not state_diff

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"config": config.to_dict(), "config_hash": config.hash, "target": target,
               "cells_per_pe": geometry.cells_per_pe,
               "parallel_count": geometry.parallel_count,
               "inputs": len(X), "train": train, "passes": len(data.lessons),
               "bit_exact": ok, "output_bits_checked": hw.checked,
               "output_mismatches": hw.mismatches, "state_differences": len(state_diff),
               "raw": _jsonable(raw), "models": _jsonable(rows)}
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    plots = _plots(out_dir, config, X, results, rows, raw, hw_name)
    _markdown(out_dir, summary, rows, raw, plots)
    table = [f"{label:38s}" + "".join(f"{c:>22s}" for c in cells) + f"{raw_cell:>14s}"
             for label, cells, raw_cell in _table(rows, raw)]
    first = hw.first or (str(state_diff[0]) if state_diff else None)
    return DemoResult(summary, table, first, out_dir, plots)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _table(rows, raw) -> list[tuple[str, list[str], str]]:
    """The comparison table, (label, a cell per model, raw input's cell) a line; the first line
    holds the column names."""
    names = list(rows)
    other = "readout_accuracy_logistic_regression"

    def pct(key):
        return [f"{rows[n][key]:.1%}" for n in names]

    table = [("", names, "raw input"),
             ("readout accuracy, linear SVM", pct("readout_accuracy"),
              f"{raw['readout_accuracy']:.1%}"),
             ("readout accuracy, logistic regression", pct(other), f"{raw[other]:.1%}")]
    table += [(f"output overlap, {f:.0%} bits moved",
               [f"{rows[n]['noise_overlap'][f]:.1%}" for n in names],
               f"{raw['noise_overlap'][f]:.1%}") for f in NOISE_LEVELS]
    table += [("active per input", pct("sparsity"), f"{raw['sparsity']:.1%}"),
              ("cells ever active", pct("cells_ever_active"), ""),
              ("learning, inputs/s", [f"{rows[n]['learn_inputs_per_s']:,.0f}" for n in names], ""),
              ("inference, inputs/s", [f"{rows[n]['infer_inputs_per_s']:,.0f}" for n in names],
               "")]
    return table


def _plots(out_dir, config, X, results, rows, raw, hw_name) -> list[str]:
    # matplotlib is imported only when a report is drawn: it takes about a second to import
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    hw = results[hw_name]

    def save(fig, name):
        fig.tight_layout()
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        files.append(name)

    fig, axes = plt.subplots(4, 8, figsize=(12, 6.5))
    for k in range(8):
        for row, (img, title) in enumerate(((X[k], "input"), (hw["outputs"][k], "hardware"),
                                            (results[TWIN]["outputs"][k], "twin"),
                                            (results[USER]["outputs"][k], "user's SP"))):
            axes[row, k].imshow(img, cmap="gray_r", interpolation="nearest")
            axes[row, k].set_xticks([])
            axes[row, k].set_yticks([])
            if k == 0:
                axes[row, k].set_ylabel(title)
    save(fig, "inputs_and_active_cells.png")

    state = hw["state"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (field, title, scale) in zip(axes, (
            ("active_duty", "active duty cycle", 2.0 ** -config.duty_bits),
            ("overlap_duty", "overlap duty cycle", 2.0 ** -config.duty_bits),
            ("boost", "boost factor", 2.0 ** -config.boost_frac_bits))):
        im = ax.imshow(np.asarray(getattr(state, field)) * scale, cmap="viridis")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, "duty_and_boost_maps.png")

    names = list(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    accs = [rows[n]["readout_accuracy"] for n in names] + [raw["readout_accuracy"]]
    a1.bar(names + ["raw input"], accs, color=[f"C{k}" for k in range(len(names))]
           + ["tab:gray"])
    a1.tick_params(axis="x", labelsize=7)
    a1.set_ylim(min(accs) - 0.05, 1.0)
    a1.set_title("readout accuracy, linear SVM (test set)")
    levels = list(raw["noise_overlap"])
    for n in names:
        a2.plot([0] + levels, [1.0] + [rows[n]["noise_overlap"][f] for f in levels],
                marker="o", label=n)
    a2.plot([0] + levels, [1.0] + [raw["noise_overlap"][f] for f in levels],
            marker="o", color="tab:gray", label="raw input")
    a2.set_xlabel("fraction of active input bits moved")
    a2.set_ylabel("output overlap with the clean input's")
    a2.legend(fontsize=7)
    a2.set_title("noise robustness")
    save(fig, "accuracy_and_noise.png")
    return files


def _markdown(out_dir, summary, rows, raw, plots):
    names = list(rows)
    lines = ["# cellsp demo report", "",
             f"Config `{summary['config_hash']}`, {summary['config']['cell_shape'][0]}x"
             f"{summary['config']['cell_shape'][1]} cells, {summary['cells_per_pe']} per "
             f"processing element, target {summary['target']}; {summary['inputs']} digits: "
             f"the SPs learn {summary['passes']} passes over the first {summary['train']}, "
             f"which also train the readout; the rest test it.", "",
             f"{TWIN}: the classic SP closest to the config (`SoftwareSP.from_config`: local "
             f"3x3 inhibition, the same pools and initial permanences). {USER}: the classic SP "
             f"as a user would run it (global inhibition, pools spanning the input, htm.core's "
             f"default parameters with the hotgym example's density 0.05 and boost 3).", "",
             f"Bit-exact check against the golden model: {summary['output_bits_checked']:,} output "
             f"bits, {summary['output_mismatches']} mismatches; state differences: "
             f"{summary['state_differences']}.", "",
             "| | " + " | ".join(names) + " | raw input |", "|---" * (len(names) + 2) + "|"]
    lines += [f"| {label} | " + " | ".join(cells) + f" | {raw_cell} |"
              for label, cells, raw_cell in _table(rows, raw)[1:]]
    lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
