"""`cellsp verify`: random inputs through the simulated HDL and the golden model side by side."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cellsp.sim.config import SPConfig
from cellsp.sim.golden import GoldenModel
from cellsp.host.array_run import Operation

__all__ = ["verify", "VerifyReport", "make_simulator"]


@dataclass
class VerifyReport:
    steps: int = 0
    mismatches: int = 0
    messages: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"verify: {self.steps} steps, {self.mismatches} mismatches"


class _DriverSim:
    """The array behind the protocol engine and the host driver, with the simulators' `run`."""

    def __init__(self, config: SPConfig, transport: str, cells_per_pe: int = 1,
                 parallel_count: bool = False, **_):
        from cellsp.sim.geometry import ArrayGeometry

        self.geometry = ArrayGeometry.for_config(config, cells_per_pe=cells_per_pe,
                                                 parallel_count=parallel_count)
        self.log = None
        self.transport = transport
        self.driver = None

    def run(self, operations):
        """Loads, steps and reads in order; consecutive steps with one learn flag go out as
        one pipelined run."""
        from itertools import groupby

        from cellsp.host.targets import open_driver

        from cellsp.host.array_run import Results, StepResult

        if self.driver is None:
            self.driver = open_driver(self.transport, self.geometry, log=self.log)
        results = Results()
        for (kind, learn), group in groupby(operations, key=lambda op: (op.kind, op.learn)):
            group = list(group)
            if kind == "step":
                out, cycles = self.driver.run(np.stack([op.x for op in group]), learn=learn,
                                              window=8)
                results.steps += [StepResult(a, int(c)) for a, c in zip(out, cycles)]
            elif kind == "load":
                for op in group:
                    self.driver.load_state(op.state)
            elif kind == "read":
                results.states += [self.driver.read_state() for _ in group]
            else:
                raise ValueError(f"operation {kind!r} is not supported through the protocol")
        return results


def make_simulator(kind: str, config: SPConfig, **hw):
    """An Amaranth or Verilator simulation of the array for `config` (with `transport`: the
    array behind the protocol engine and the host driver)."""
    if hw.get("transport"):
        return _DriverSim(config, **hw)
    if kind == "amaranth":
        from cellsp.host.array_amaranth import AmaranthArraySim
        return AmaranthArraySim(config, **hw)
    if kind == "verilator":
        from cellsp.host.array_verilator import VerilatorArraySim
        from cellsp.sim.geometry import ArrayGeometry
        run = {name: hw.pop(name) for name in ("idle", "stall", "seed") if name in hw}
        return VerilatorArraySim(ArrayGeometry.for_config(config, **hw), **run)
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
