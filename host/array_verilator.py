"""Run the cell array in Verilator through cocotb's Python runner.

A Verilator model is built once per config, hardware geometry, HDL source and tool versions
(`cellsp.hdl.sources.gateware_key`: the Verilog is generated only to build) by
`cellsp.host.verilator_build`, into the one cache of models (``$CELLSP_CACHE``, by default
``~/.cache/cellsp``); later runs reuse it. Builds and runs are managed children
(`cellsp.sim.processes`): they end with cellsp, and an interrupted build leaves no folder
behind.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path

from cocotb_tools.check_results import get_results
from cocotb_tools.config import libs_dir as cocotb_libs_dir
from cocotb_tools.runner import get_runner

from cellsp.hdl.sources import TOOL_PACKAGES, gateware_key
from cellsp.sim import processes
from cellsp.sim.config import SPConfig
from cellsp.sim.geometry import ArrayGeometry

from .array_run import Results
from .verilator_build import VerilatorError, cached_model, verilator_environment

__all__ = ["VerilatorArraySim", "VerilatorError"]

TOPLEVEL = "cellsp_array"
#: Verilator's options for the array model (they enter its cache key)
BUILD_ARGS = ("-Wno-fatal", "-O2")


class VerilatorArraySim:
    """The cell array of `geometry` compiled by Verilator, driven by a cocotb test bench.

    Same interface as `AmaranthArraySim`: ``run(operations) -> Results``. `idle`: probability
    of an idle cycle before each input beat or state word; `stall`: probability of holding
    `ready` low on each output or read-back cycle; `seed` draws both. The build happens on
    first use (or ``build()``), once per model key.
    """

    def __init__(self, geometry: ArrayGeometry, idle: float = 0.0, stall: float = 0.0,
                 seed: int = 0, log=None):
        self.geometry = geometry
        self.config: SPConfig = geometry.config
        self.idle, self.stall, self.seed = idle, stall, seed
        self.log = log or (lambda msg: None)
        self._build_dir: Path | None = None

    def verilog(self) -> str:
        """The array's Verilog (module `TOPLEVEL`)."""
        # Amaranth is imported only to generate the Verilog: a cached model opens without it.
        from cellsp.hdl.verilog import array_verilog

        return array_verilog(self.geometry, name=TOPLEVEL)

    def model_key(self) -> str:
        """Identity of the built model: config, hardware geometry, the sources that generate
        its Verilog, the tool versions and the folder of cocotb's libraries (the binary loads
        them from there: a model built in another environment, e.g. a removed venv, would not
        start), so a change to any of them builds a new model; computed without generating
        the Verilog."""
        return gateware_key("cocotb-array", self.geometry, TOPLEVEL, *BUILD_ARGS,
                            str(Path(cocotb_libs_dir).resolve()),
                            tools=(*TOOL_PACKAGES, "cocotb"))

    def build(self) -> Path:
        """Build (or find in the cache) the Verilator model; return its folder."""
        if self._build_dir is None:
            cfg = self.config
            # a rough guess: a 3x3-cell model 20-25 s on 2 idle cores
            self._build_dir = cached_model(
                self.model_key(), self._build, ready=TOPLEVEL,
                describe=f"building the Verilator model of {cfg.cell_shape[0]}x"
                         f"{cfg.cell_shape[1]} cells ({self.geometry.cells_per_pe} per PE), "
                         f"once per config",
                expected_s=20 + self.geometry.num_pes)
        return self._build_dir

    def _build(self, tmp: Path, log_file: Path) -> None:
        """Compile the array's Verilog for cocotb in `tmp`, the tools' output to `log_file`."""
        source = tmp / f"{TOPLEVEL}.v"
        source.write_text(self.verilog())
        with processes.environment(verilator_environment()), processes.managed():
            runner = get_runner("verilator")
            try:
                runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=tmp,
                             build_args=list(BUILD_ARGS), waves=True, log_file=log_file)
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise VerilatorError(f"Verilator build failed ({exc}); log: "
                                     f"{log_file}") from None
            except SystemExit as exc:
                raise VerilatorError(f"Verilator build failed (exit {exc.code}); log: "
                                     f"{log_file}") from None

    def run(self, operations, vcd: str | None = None, expected=None) -> Results:
        """Run the operations (see `cellsp.host.array_run.Operation`); return Results.

        `expected`, if given, is the golden model's (T, H, W) active maps: the test bench then
        stops at the first differing step with a message naming the step and cell.
        `vcd`: also write the waveforms to this path.
        """
        build_dir = self.build()
        work = Path(tempfile.mkdtemp(prefix="cellsp-run-"))
        spec = {"geometry": (self.config.to_dict(), self.geometry.input_width,
                             self.geometry.lanes, self.geometry.cells_per_pe,
                             self.geometry.row_scan),
                "operations": operations, "idle": self.idle, "stall": self.stall,
                "seed": self.seed, "expected": expected}
        (work / "spec.pkl").write_bytes(pickle.dumps(spec))
        env = {**verilator_environment(), "CELLSP_SPEC": str(work / "spec.pkl"),
               "CELLSP_RESULTS": str(work / "results.pkl")}
        xml = work / "results.xml"
        with processes.environment(env), processes.managed():
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
                results.failure = (f"cocotb reported {failed} failing test(s); log: "
                                   f"{work / 'sim.log'}")
        if not results.failure:
            shutil.rmtree(work, ignore_errors=True)
        return results
