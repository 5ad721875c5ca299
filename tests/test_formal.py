"""Formal properties of the cell array and the protocol engine (`cellsp.hdl.properties`), proved
with SymbiYosys and Yices (`cellsp.hdl.formal`) at small sizes: each property passes on the
real gateware, and fails, with a counterexample trace, on a deliberately flawed design or
environment. The longer proofs: `cellsp bench formal`."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from cellsp.hdl.formal import design_rtlil, parse_log, prove, sby_script
from cellsp.hdl.properties import (FLAWS, SMALL, DutyRangeProperty, crc16_ccitt_false,
                                   proof_plan)
from cellsp.host.cli import main
from cellsp.sim import processes
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import crc16

QUICK = proof_plan("quick")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """Every quick proof's result, two SymbiYosys runs at a time (the designs are converted
    first, one after the other)."""
    base = tmp_path_factory.mktemp("formal")
    designs = [design_rtlil(p.build()) for p in QUICK]
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = [pool.submit(prove, il, p.name, p.mode, p.depth, 300, base / f"{i:02d}")
                   for i, (il, p) in enumerate(zip(designs, QUICK))]
        return [r.result() for r in running]


@pytest.mark.parametrize("index", range(len(QUICK)),
                         ids=[f"{p.name}-{p.flaw or p.mode}" for p in QUICK])
def test_quick_proof(index, quick_results):
    proof, result = QUICK[index], quick_results[index]
    if proof.flaw is None:
        assert result.status == "PASS", result.log
        assert result.reached == proof.depth
    else:
        # the flaw is found: a failed assertion and a counterexample trace to look at
        assert result.status == "FAIL", result.log
        assert result.failed and all("properties.py:" in loc for loc in result.failed)
        assert result.trace and result.trace.endswith(".vcd")
        assert Path(result.trace).exists()


def test_every_property_and_flaw_is_in_the_quick_plan():
    proved = {(p.name, p.flaw) for p in QUICK}
    assert {name for name, flaw in proved if flaw is None} == {p.name for p in QUICK}
    assert len({flaw for _, flaw in proved if flaw}) == len(FLAWS)


def test_reference_crc_is_crc16_ccitt_false():
    """The CRC the frame property checks against is PROTOCOL.md's (check value 0x29B1)."""
    data = b"123456789"
    m = Module()
    inputs = [Signal(8, name=f"byte_{i}") for i in range(len(data))]
    out = Signal(16)
    m.d.comb += out.eq(crc16_ccitt_false(m, inputs))
    sim = Simulator(m)
    seen = {}

    async def bench(ctx):
        for signal, value in zip(inputs, data):
            ctx.set(signal, value)
        seen["crc"] = ctx.get(out)
    sim.add_testbench(bench)
    sim.run()
    assert seen["crc"] == crc16(data) == 0x29B1


def test_timeout_kills_the_proof(tmp_path):
    design = DutyRangeProperty(ArrayGeometry.for_config(SMALL))
    result = prove(design, "duty", "bmc", 40, timeout=1.0, workdir=tmp_path)
    assert result.status == "TIMEOUT"
    assert processes.live_children() == []


def test_sby_script_and_log_parsing():
    script = sby_script("prove", 7)
    assert "mode prove" in script and "depth 7" in script and "smtbmc yices" in script
    with pytest.raises(ValueError, match="mode"):
        sby_script("cover", 3)
    log = "\n".join([
        "SBY 1 [p] engine_0: ##   0:00:00  Checking assertions in step 0..",
        "SBY 1 [p] engine_0: ##   0:00:00  Checking assertions in step 1..",
        "SBY 1 [p] summary: counterexample trace: p/engine_0/trace.vcd",
        "SBY 1 [p] summary:   failed assertion top.design._witness_.check_3 at "
        "hdl/properties.py:12 step 1",
        "SBY 1 [p] DONE (FAIL, rc=2)",
    ])
    assert parse_log(log) == ("FAIL", 2, ("hdl/properties.py:12",), "p/engine_0/trace.vcd")
    assert parse_log("no summary")[0] == "ERROR"


def test_bench_formal_checks_its_options_before_any_proof(tmp_path, capsys, monkeypatch):
    """`cellsp bench formal`: a bad option or an existing --out ends in one error line, before
    any proof runs."""
    import cellsp.hdl.formal as formal

    def forbidden(*args, **kwargs):
        raise AssertionError("a proof ran")
    monkeypatch.setattr(formal, "run_proofs", forbidden)
    existing = tmp_path / "formal.json"
    existing.write_text("{}")
    assert main(["bench", "formal", "--out", str(existing)]) != 0
    assert "exists" in capsys.readouterr().err
    assert main(["bench", "formal", "--timeout", "0"]) == 2
    assert main(["bench", "formal", "--level", "huge"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("cellsp bench formal: error:")
                                    for line in errors)
