"""`cellsp verify`: random inputs through the simulated HDL and the golden model side by side."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import SPConfig
from .golden import GoldenModel
from .hdl_run import Operation

__all__ = ["verify", "VerifyReport", "make_simulator"]


@dataclass
class VerifyReport:
    steps: int = 0
    mismatches: int = 0
    messages: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"verify: {self.steps} steps, {self.mismatches} mismatches"


def make_simulator(kind: str, config: SPConfig, **hw):
    """An Amaranth or Verilator simulation of the array for `config`."""
    if kind == "amaranth":
        from .hdl_amaranth import AmaranthArraySim
        return AmaranthArraySim(config, **hw)
    if kind == "verilator":
        from .verilator import VerilatorArraySim
        return VerilatorArraySim(config, **hw)
    raise ValueError(f"unknown simulator {kind!r}: use 'amaranth' or 'verilator'")


def verify(config: SPConfig, sim: str = "verilator", steps: int = 100, learn: bool = True,
           seed: int = 0, chunk: int = 250, progress=None, log=None, **hw) -> VerifyReport:
    """Run `steps` random inputs (learning if `learn`) through the simulated array and the
    golden model; count differing output bits and, after every chunk, differing state values.

    The run is cut into chunks: each chunk loads the golden model's state into the array, runs
    its inputs and reads the whole state back, so read-back and load are verified too.
    """
    simulator = make_simulator(sim, config, seed=seed, **hw)
    if log and hasattr(simulator, "log"):
        simulator.log = log
    rng = np.random.default_rng(seed)
    golden = GoldenModel(config)
    report = VerifyReport()
    for start in range(0, steps, chunk):
        count = min(chunk, steps - start)
        density = rng.uniform(0.15, 0.45)
        X = rng.random((count,) + tuple(config.input_shape)) < density
        ops = ([Operation("load", state=golden.state())]
               + [Operation("step", x=x, learn=learn) for x in X] + [Operation("read")])
        result = simulator.run(ops)
        expected = golden.run(X, learn=learn)
        got = np.array([r.active for r in result.steps]).reshape(expected.shape)
        diff = np.argwhere(expected != got)
        report.mismatches += len(diff)
        for t, i, j in diff[:5]:
            report.messages.append(f"step {start + t}: cell ({i}, {j}) active: golden "
                                   f"{int(expected[t, i, j])}, hardware {int(got[t, i, j])}")
        state_diff = golden.state().differences(result.states[-1], limit=10**9)
        report.mismatches += len(state_diff)
        report.messages += [f"after step {start + count - 1}: {d}" for d in state_diff[:5]]
        report.steps += count
        if progress:
            progress(count)
    return report
