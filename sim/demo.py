"""The main job, golden-model edition: the cellular SP (golden model) and the classic software SP
learn scikit-learn's `digits`, then infer, and a linear readout measures what each kept.

Once the hardware path exists (Verilator behind the host driver), `cellsp demo` streams the same
data through it and checks it against this golden model bit for bit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .config import SPConfig

__all__ = ["run_golden_demo", "readout_accuracy"]


def readout_accuracy(features: np.ndarray, labels: np.ndarray, train: int) -> float:
    """Accuracy of a logistic-regression readout trained on the first `train` samples."""
    from sklearn.linear_model import LogisticRegression

    features = features.reshape(len(features), -1).astype(np.float32)
    clf = LogisticRegression(max_iter=3000)
    clf.fit(features[:train], labels[:train])
    return float(clf.score(features[train:], labels[train:]))


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="input", leave=False, dynamic_ncols=True)


def _run_model(name: str, model, X: np.ndarray, passes: int) -> dict:
    """Learn `passes` times over X, then infer X; return outputs and timings."""
    t0 = time.perf_counter()
    with _progress(passes * len(X), f"{name}: learning") as bar:
        for _ in range(passes):
            model.run(X, learn=True, progress=bar.update)
    learn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _progress(len(X), f"{name}: inferring") as bar:
        out = model.run(X, learn=False, progress=bar.update)
    infer_s = time.perf_counter() - t0
    return {"outputs": out, "learn_inputs_per_s": passes * len(X) / learn_s,
            "infer_inputs_per_s": len(X) / infer_s}


def run_golden_demo(config: SPConfig | None = None, out_dir: Path = Path("cellsp-report"),
                    passes: int = 1) -> int:
    """Run the demo; print a side-by-side table and write summary.json into out_dir."""
    from .datasets import load_digits_binary
    from .golden import GoldenModel
    from .software_sp import SoftwareSP

    cfg = config or SPConfig()
    X, y = load_digits_binary(cfg.input_shape)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    train = len(X) * 2 // 3
    print(f"cellsp demo: {len(X)} digits as {cfg.input_shape[0]}x{cfg.input_shape[1]} bit planes "
          f"({X.mean():.1%} bits on), {cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells, "
          f"config {cfg.hash}")

    runs = {"golden (cellular)": _run_model("golden", GoldenModel(cfg), X, passes),
            "software SP": _run_model("software", SoftwareSP.from_config(cfg), X, passes)}
    raw_acc = readout_accuracy(X, y, train)
    rows = {}
    for name, run in runs.items():
        out = run["outputs"]
        rows[name] = {
            "readout_accuracy": readout_accuracy(out, y, train),
            "sparsity": float(out.mean()),
            "cells_ever_active": float(out.reshape(len(out), -1).any(0).mean()),
            "learn_inputs_per_s": run["learn_inputs_per_s"],
            "infer_inputs_per_s": run["infer_inputs_per_s"],
        }

    names = list(rows)
    print()
    print(f"{'':28s}" + "".join(f"{n:>20s}" for n in names) + f"{'raw input':>14s}")
    print(f"{'readout accuracy (test)':28s}"
          + "".join(f"{rows[n]['readout_accuracy']:>20.1%}" for n in names) + f"{raw_acc:>14.1%}")
    print(f"{'active cells per input':28s}"
          + "".join(f"{rows[n]['sparsity']:>20.1%}" for n in names) + f"{X.mean():>14.1%}")
    print(f"{'cells ever active':28s}"
          + "".join(f"{rows[n]['cells_ever_active']:>20.1%}" for n in names))
    print(f"{'learning, inputs/s':28s}"
          + "".join(f"{rows[n]['learn_inputs_per_s']:>20,.0f}" for n in names))
    print(f"{'inference, inputs/s':28s}"
          + "".join(f"{rows[n]['infer_inputs_per_s']:>20,.0f}" for n in names))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"config": cfg.to_dict(), "config_hash": cfg.hash, "inputs": len(X),
               "train": train, "passes": passes, "raw_readout_accuracy": raw_acc,
               "models": rows}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out_dir / 'summary.json'}")
    return 0
