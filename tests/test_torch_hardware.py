"""HardwareSP (host/torch_hardware.py): the array's compiled Verilator model behind TorchSP's
interface gives TorchSP's outputs and state, and states move between the two through
state_dict. The config and geometry of tests/test_bench_fuzz.py, so the cached model serves
both (a cold build takes 15-30 s on 2 cores)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install -e '.[torch]'")

from cellsp.host.bench_fuzz import TEST_CONFIG  # noqa: E402
from cellsp.host.torch_hardware import HardwareSP, spatial_pooler  # noqa: E402
from cellsp.sim.torch_sp import TorchSP  # noqa: E402

CFG = TEST_CONFIG
HARDWARE = dict(cells_per_pe=3, input_width=6)


@pytest.fixture(scope="module")
def hardware():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with spatial_pooler(CFG, target="verilator", **HARDWARE) as sp:
        yield sp
    torch.set_num_threads(threads)


def test_the_hardware_gives_torch_sp_outputs_and_state(hardware):
    assert isinstance(hardware, HardwareSP)
    software = spatial_pooler(CFG)
    assert isinstance(software, TorchSP)
    X = np.random.default_rng(0).random((60,) + CFG.input_shape) < 0.35
    learn = np.arange(60) < 40
    for sp in (software, hardware):     # the same calls on both
        sp.set_state(0, TorchSP(CFG).state(0))
        sp.train()
        steps = torch.cat([sp.step(x, learn=True) for x in X[:10]])
        run = sp.run(X[10:], learn=learn[10:])
        sp.eval()
        sp.outputs = (steps, run, sp(torch.from_numpy(X[:20])))
    for a, b in zip(software.outputs, hardware.outputs):
        assert a.shape == b.shape and torch.equal(a, b)
    assert software.state(0).differences(hardware.state(0)) == []
    assert hardware.cycles.shape == (20,) and (hardware.cycles > 0).all()


def test_a_state_moves_from_torch_sp_to_the_hardware_and_back(hardware):
    software = TorchSP(CFG)
    software.run(np.random.default_rng(1).random((30,) + CFG.input_shape) < 0.35, learn=True)
    hardware.load_state_dict(software.state_dict())
    assert software.state(0).differences(hardware.state(0)) == []
    back = TorchSP(CFG)
    back.load_state_dict(hardware.state_dict())
    for key, value in software.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    with pytest.raises(RuntimeError, match="one instance of seed"):
        hardware.load_state_dict(TorchSP(CFG, instances=1, seeds=[5]).state_dict())


def test_hardware_options_and_instances_are_checked():
    with pytest.raises(ValueError, match="hardware target holds one SP"):
        spatial_pooler(CFG, target="verilator", instances=4)
    with pytest.raises(ValueError, match="apply to a hardware target"):
        spatial_pooler(CFG, target="torch", cells_per_pe=3)


# ---------------------------------------------------------------------- cellsp bench torch


def test_bench_torch_measures_every_row_and_checks_its_options(tmp_path, capsys):
    from cellsp.host.bench_torch import bench_torch
    from cellsp.host.cli import main

    data = bench_torch(cells=4, instances=(1, 3), min_seconds=0.01, learn_steps=5,
                       infer_inputs=16, threads=1)
    assert [r["model"] for r in data["reference"]] == ["golden model", "software SP"]
    assert [r["instances"] for r in data["lockstep"]] == [1, 3]
    assert all(r["learn_inputs_per_s"] > 0 and r["exchange_ms_per_step"] > 0
               for r in data["lockstep"])
    assert data["batched"]["infer_inputs_per_s"] > 0
    assert {r["board"] for r in data["boards"]} == {"icebreaker", "ulx3s-85f", "ecpix5-85f"}
    assert set(data["targets"]) == {"single_step_over_golden"}       # no 4,096 row here
    assert len(data["table"]) == 2 + 2 + 2 + 1 + 3
    if not torch.cuda.is_available():
        assert main(["bench", "torch", "--device", "cuda", "--out",
                     str(tmp_path / "b.json")]) == 2
        err = capsys.readouterr().err
        assert "sees no CUDA device" in err and not (tmp_path / "b.json").exists()
