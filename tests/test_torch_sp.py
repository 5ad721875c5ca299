"""TorchSP (sim/torch_sp.py), the SP as a PyTorch layer, against the golden model: outputs and
whole state after every learning step, bit for bit, on clipped and wrapped, square and
non-square arrays, boosting on and off, k from 1 to 9; lockstep instances with their own seeds
against one golden model each; state round trips; the golden model's errors on bad input. The
mutation tests at the end change one rule in a TorchSP and check that the comparison catches
it. CUDA runs the same comparisons where there is a GPU (skipped with a message otherwise)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install -e '.[torch]'")

from cellsp.sim import GoldenModel, SPConfig  # noqa: E402
from cellsp.sim.torch_sp import FUSED_STEP, TorchSP  # noqa: E402

from .configs import FAST_DUTY, NONSQUARE_CLIP, TINY_BOOST_OFF, TINY_BOOSTED  # noqa: E402

#: clipped, wrapped, square and non-square; boosting on and off; k = 1, 3, 5, 9
CONFIGS = {
    "tiny-wrap-boosted-k3": TINY_BOOSTED,
    "tiny-wrap-boost-off-k3": TINY_BOOST_OFF,
    "nonsquare-clip-k1": NONSQUARE_CLIP,
    "nonsquare-wrap-k5": SPConfig(input_shape=(12, 9), cell_shape=(4, 6), potential_radius=2,
                                  winners=5, boost_strength=2.0, perm_bump=20, **FAST_DUTY),
    "thin-clip-k9": SPConfig(input_shape=(5, 16), cell_shape=(2, 7), potential_radius=1,
                             edge="clip", winners=9, boost_strength=4.0, **FAST_DUTY),
}

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="no CUDA device: the CUDA bit-exact checks run where there is "
                                 "one (the CPU build of torch is installed here)")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the tests' tensors are small, and the CPUs are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inputs(cfg, steps, seed=0, density=0.35, instances=None):
    shape = (steps,) + ((instances,) if instances else ()) + tuple(cfg.input_shape)
    return np.random.default_rng(seed).random(shape) < density


def first_difference(sp, models, X, learn=True):
    """Step `sp` and one golden model per instance through X (T, Hin, Win) for all instances,
    or (T, instances, Hin, Win); return the first difference in outputs or whole state, as a
    line, or None."""
    for t, x in enumerate(X):
        out = sp.step(x, learn=learn).cpu().numpy()
        for i, model in enumerate(models):
            want = model.step(x[i] if x.ndim == 3 else x, learn=learn)
            if not np.array_equal(out[i], want):
                return f"step {t}, instance {i}: outputs differ at {np.argwhere(out[i] != want)[:3]}"
            diffs = model.state().differences(sp.state(i), limit=3)
            if diffs:
                return f"step {t}, instance {i}: state differs: {diffs}"
    return None


@pytest.mark.parametrize("name", CONFIGS)
def test_outputs_and_whole_state_equal_the_golden_model_for_200_learning_steps(name):
    cfg = CONFIGS[name]
    sp = TorchSP(cfg)
    assert first_difference(sp, [GoldenModel(cfg)], inputs(cfg, 200)) is None
    assert sp.active_duty.any() and (sp.boost != cfg.boost_one).any() == (cfg.boost_strength > 0)


@pytest.mark.parametrize("k", range(1, 10))
def test_every_k_from_1_to_9(k):
    cfg = SPConfig(input_shape=(8, 8), cell_shape=(4, 5), potential_radius=2, winners=k,
                   boost_strength=1.5, **FAST_DUTY)
    assert first_difference(TorchSP(cfg), [GoldenModel(cfg)], inputs(cfg, 40, seed=k)) is None


def test_a_default_sized_array_learning_then_inferring_in_a_batch():
    cfg = SPConfig(cell_shape=(16, 16), potential_pct=0.6, winners=2)
    X = inputs(cfg, 60, density=0.25)
    learn = np.arange(60) % 3 != 2          # runs of learning and of inference
    golden = GoldenModel(cfg)
    sp = TorchSP(cfg)
    np.testing.assert_array_equal(sp.run(X, learn=learn)[:, 0].numpy(), golden.run(X, learn=learn))
    assert golden.state().differences(sp.state(0)) == []
    np.testing.assert_array_equal(sp.infer(X)[:, 0].numpy(), golden.infer(X))


def test_lockstep_instances_each_equal_a_golden_model_of_their_seed():
    cfg = CONFIGS["nonsquare-wrap-k5"]
    seeds = [7, 2**63 - 1, 0]
    sp = TorchSP(cfg, instances=3, seeds=seeds)
    models = [GoldenModel(cfg.replace(seed=s)) for s in seeds]
    assert not np.array_equal(models[0].potential, models[1].potential)
    # one stream per instance, then one input for all
    assert first_difference(sp, models, inputs(cfg, 100, instances=3)) is None
    assert first_difference(sp, models, inputs(cfg, 60, seed=1)) is None
    X = inputs(cfg, 30, seed=2)
    batched = sp.run(X, learn=False).numpy()
    for i, model in enumerate(models):
        np.testing.assert_array_equal(batched[:, i], model.infer(X))
    per_instance = inputs(cfg, 20, seed=3, instances=3)
    batched = sp.run(per_instance, learn=False).numpy()
    for i, model in enumerate(models):
        np.testing.assert_array_equal(batched[:, i], model.infer(per_instance[:, i]))


def test_sixteen_instances_take_the_separable_3x3_passes_and_stay_bit_exact():
    """From 16 instances the 3x3 sums and maxima run as separable passes."""
    cfg = NONSQUARE_CLIP
    sp = TorchSP(cfg, instances=16)
    X = inputs(cfg, 60, instances=16)
    out = sp.run(X, learn=True).numpy()
    for i in (0, 9, 15):
        model = GoldenModel(sp.golden_config(i))
        np.testing.assert_array_equal(out[:, i], model.run(X[:, i], learn=True))
        assert model.state().differences(sp.state(i)) == []


#: configs that take the other arithmetic paths: int16 permanences (perm_bits > 8), a
#: threshold that is not a power of two (a clamp instead of a shift), duty cycles too wide for
#: the boost lookup table (a division each step)
OTHER_PATHS = {
    "perm-bits-10": SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                             perm_bits=10, connected_threshold=512, perm_inc=40, perm_dec=13,
                             perm_bump=30, init_spread=128, boost_strength=1.0, **FAST_DUTY),
    "threshold-100": TINY_BOOSTED.replace(connected_threshold=100),
    "duty-bits-18": TINY_BOOSTED.replace(duty_bits=18, duty_period_log2=3),
}


@pytest.mark.parametrize("name", OTHER_PATHS)
def test_the_other_arithmetic_paths_equal_the_golden_model(name):
    cfg = OTHER_PATHS[name]
    sp = TorchSP(cfg)
    assert (sp.perm_dtype == torch.int16) == (name == "perm-bits-10")
    assert (sp.boost_by_difference.numel() == 0) == (name == "duty-bits-18")
    assert first_difference(sp, [GoldenModel(cfg)], inputs(cfg, 120)) is None


@pytest.mark.parametrize("name", ["tiny-wrap-boosted-k3", "nonsquare-clip-k1",
                                  "nonsquare-wrap-k5"])
def test_the_large_grid_paths_stay_bit_exact(name):
    """The 3x3 exchange by padded slices and the synapses slot by slot (as for thousands of
    instances), on small arrays."""
    cfg = CONFIGS[name]
    sp = TorchSP(cfg, instances=3)
    sp.small_grid = sp.slot_loop = 0
    models = [GoldenModel(sp.golden_config(i)) for i in range(3)]
    assert first_difference(sp, models, inputs(cfg, 60, instances=3)) is None
    assert first_difference(sp, models, inputs(cfg, 20, seed=1)) is None


#: the fused learning step's paths: wrapped and clipped edges, uint8 and int16 permanences, a
#: threshold that is not a power of two, the boost lookup table and the division
FUSED = {"tiny-wrap-boosted-k3": TINY_BOOSTED, "nonsquare-clip-k1": NONSQUARE_CLIP,
         "thin-clip-k9": CONFIGS["thin-clip-k9"], **OTHER_PATHS}


def fused(sp):
    """sp learning through the fused functions, uncompiled: the arithmetic that
    TorchSP(compile=True) compiles, at the cost of eager operations."""
    sp.fused = FUSED_STEP
    return sp


@pytest.mark.parametrize("name", FUSED)
def test_the_fused_learning_step_equals_the_golden_model(name):
    cfg = FUSED[name]
    sp = fused(TorchSP(cfg, instances=3))
    models = [GoldenModel(sp.golden_config(i)) for i in range(3)]
    assert first_difference(sp, models, inputs(cfg, 60, instances=3)) is None
    assert first_difference(sp, models, inputs(cfg, 20, seed=1)) is None
    assert sp.last["weak"].dtype == torch.bool and sp.last["active"].dtype == torch.bool


@pytest.mark.slow
def test_the_compiled_learning_step_equals_the_golden_model():
    """TorchSP(compile=True): the three functions through torch.compile (5-20 s, most of it
    compiling; torch keeps the kernels in its cache)."""
    cfg = CONFIGS["nonsquare-wrap-k5"]
    sp = TorchSP(cfg, instances=2, compile=True)
    assert sp.fused is not None
    models = [GoldenModel(sp.golden_config(i)) for i in range(2)]
    assert first_difference(sp, models, inputs(cfg, 40, instances=2)) is None
    X = inputs(cfg, 10, seed=1)
    np.testing.assert_array_equal(sp.run(X, learn=False)[:, 1].numpy(), models[1].infer(X))


def test_default_seeds_follow_the_config_seed():
    sp = TorchSP(TINY_BOOSTED, instances=2)
    assert sp.seeds.tolist() == [TINY_BOOSTED.seed, TINY_BOOSTED.seed + 1]
    assert sp.golden_config(1) == TINY_BOOSTED.replace(seed=TINY_BOOSTED.seed + 1)


def test_forward_learns_in_training_mode_and_only_infers_in_eval_mode():
    cfg = TINY_BOOSTED
    X = torch.from_numpy(inputs(cfg, 20))
    sp, golden = TorchSP(cfg), GoldenModel(cfg)
    np.testing.assert_array_equal(sp.train()(X)[:, 0].numpy(), golden.run(X.numpy(), learn=True))
    before = {k: v.clone() for k, v in sp.state_dict().items()}
    np.testing.assert_array_equal(sp.eval()(X)[:, 0].numpy(), golden.run(X.numpy(), learn=False))
    assert all(torch.equal(before[k], v) for k, v in sp.state_dict().items())


def test_state_dict_round_trips_and_the_state_converts_to_and_from_the_golden_model():
    cfg = NONSQUARE_CLIP
    X = inputs(cfg, 50)
    sp = TorchSP(cfg, instances=2, seeds=[3, 4])
    sp.run(X[:25], learn=True)
    copy = TorchSP(cfg, instances=2, seeds=[0, 0])
    copy.load_state_dict(sp.state_dict())
    assert copy.seeds.tolist() == [3, 4]
    np.testing.assert_array_equal(copy.run(X[25:], learn=True).numpy(),
                                  sp.run(X[25:], learn=True).numpy())
    goldens = [sp.to_golden(i) for i in range(2)]
    assert [g.config.seed for g in goldens] == [3, 4]
    back = TorchSP.from_golden(goldens)
    for k, v in sp.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    # and into a fresh module instance by instance
    fresh = TorchSP(cfg, instances=2, seeds=[3, 4])
    fresh.set_state(1, goldens[1].state())
    assert goldens[1].state().differences(fresh.state(1)) == []


def test_bad_states_are_refused_as_the_golden_model_refuses_them():
    cfg = TINY_BOOSTED
    sp = TorchSP(cfg, instances=2)
    other_seed = GoldenModel(cfg.replace(seed=99))
    other_seed.run(inputs(cfg, 5), learn=True)
    for state, match in [(other_seed.state(), "outside the potential pool"),
                         (GoldenModel(NONSQUARE_CLIP).state(), "has shape")]:
        with pytest.raises(ValueError, match=match):
            GoldenModel(cfg).set_state(state)
        with pytest.raises(ValueError, match=match):
            sp.set_state(0, state)
    with pytest.raises(ValueError, match="instance 2 does not exist"):
        sp.state(2)
    with pytest.raises(ValueError, match="differ in more than the seed"):
        TorchSP.from_golden([GoldenModel(cfg), GoldenModel(TINY_BOOST_OFF)])
    with pytest.raises(ValueError, match="3 values for 2 instances"):
        TorchSP(cfg, instances=2, seeds=[1, 2, 3])


def _error(fn):
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize("bad", ["float", "shape", "value", "batch-shape"])
def test_bad_input_gives_the_golden_model_error_and_changes_nothing(bad):
    cfg = TINY_BOOSTED
    x = inputs(cfg, 1)[0].astype(np.int64)
    X = inputs(cfg, 4).astype(np.int64)
    if bad == "float":
        x = x.astype(np.float32)
    elif bad == "shape":
        x = x[:, :5]
    elif bad == "value":
        x[2, 3] = 2
    golden, sp = GoldenModel(cfg), TorchSP(cfg)
    before = {k: v.clone() for k, v in sp.state_dict().items()}
    if bad == "batch-shape":
        X = X[:, :, :4]
        assert _error(lambda: sp.run(X, learn=True)) == \
            _error(lambda: golden.run(X, learn=True))
    else:
        for arg in (x, torch.from_numpy(x)):
            assert _error(lambda: sp.step(arg, learn=True)) == \
                _error(lambda: golden.step(x, learn=True))
    assert all(torch.equal(before[k], v) for k, v in sp.state_dict().items())
    message = _error(lambda: TorchSP(cfg, instances=3).step(inputs(cfg, 2), learn=True))
    assert "2 entries for 3 instances" in message
    assert "learn must be a bool or 4 flags" in _error(
        lambda: sp.run(inputs(cfg, 4), learn=[True, False]))


def test_importing_cellsp_sim_does_not_import_torch():
    import cellsp.sim

    assert cellsp.sim.TorchSP is TorchSP
    script = "import sys, cellsp.sim; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


# ---------------------------------------------------------------------- CUDA


@CUDA
@pytest.mark.parametrize("name", ["tiny-wrap-boosted-k3", "nonsquare-clip-k1"])
def test_cuda_outputs_and_whole_state_equal_the_golden_model(name):
    cfg = CONFIGS[name]
    sp = TorchSP(cfg, instances=2, seeds=[cfg.seed, 5], device="cuda")
    assert sp.device.type == "cuda"
    models = [GoldenModel(cfg), GoldenModel(cfg.replace(seed=5))]
    assert first_difference(sp, models, inputs(cfg, 200, instances=2)) is None
    X = inputs(cfg, 30, seed=1)
    np.testing.assert_array_equal(sp.run(X, learn=False)[:, 1].cpu().numpy(),
                                  models[1].infer(X))


@CUDA
def test_cuda_state_moves_to_the_cpu_and_back_unchanged():
    cfg = TINY_BOOSTED
    sp = TorchSP(cfg, device="cuda")
    sp.run(inputs(cfg, 30), learn=True)
    cpu = TorchSP(cfg)
    cpu.load_state_dict({k: v.cpu() for k, v in sp.state_dict().items()})
    X = inputs(cfg, 30, seed=1)
    np.testing.assert_array_equal(cpu.run(X, learn=True).numpy(),
                                  sp.run(X, learn=True).cpu().numpy())


# ---------------------------------------------------------------------- the tests can fail


def reverse_tie_break(sp):
    """The higher raster index wins ties instead of the lower."""
    sp.tie.copy_(torch.arange(sp.config.num_cells, dtype=sp.tie.dtype).view(sp.tie.shape))


def learn_outside_the_pool(sp):
    """Permanences outside the potential pool are no longer held at 0."""
    sp.cap.fill_(sp.config.perm_max)


def truncate_the_boost_index(sp):
    """The boost table index is rounded down instead of half up."""
    q = sp.config.boost_index_bits
    sp.boost_offset.copy_(sp.boost_divisor * (1 << q))
    sp.rebuild_boost_lookup()


def clamp_below_the_top(sp):
    """The fused update's clamp stops one below Pmax."""
    sp.rules = sp.rules._replace(perm_max=sp.config.perm_max - 1)


def decrement_one_more(sp):
    """The fused update takes inc + dec + 1 off an inactive bit's synapse, not dec."""
    sp.rules = sp.rules._replace(perm_dec=sp.config.perm_dec + 1)


@pytest.mark.parametrize("mutate", [reverse_tie_break, learn_outside_the_pool,
                                    truncate_the_boost_index])
@pytest.mark.parametrize("path", ["eager", "fused"])
def test_a_changed_rule_is_caught(mutate, path):
    """One rule of a TorchSP changed: the bit-exact comparison must fail."""
    cfg = TINY_BOOSTED
    sp = TorchSP(cfg) if path == "eager" else fused(TorchSP(cfg))
    mutate(sp)
    assert first_difference(sp, [GoldenModel(cfg)], inputs(cfg, 200)) is not None


@pytest.mark.parametrize("mutate", [clamp_below_the_top, decrement_one_more])
def test_a_changed_rule_of_the_fused_update_is_caught(mutate):
    cfg = TINY_BOOSTED
    sp = fused(TorchSP(cfg))
    mutate(sp)
    assert first_difference(sp, [GoldenModel(cfg)], inputs(cfg, 200)) is not None


# ---------------------------------------------------------------------- the example pipeline


def test_the_example_pipeline_learns_and_ends_bit_exact(capsys):
    """examples/torch_digits.py: digits -> TorchSP learning online -> a linear classifier by
    SGD; it checks its own final state against the golden model (exit status 0)."""
    path = Path(__file__).resolve().parent.parent / "examples" / "torch_digits.py"
    spec = importlib.util.spec_from_file_location("torch_digits", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--cells", "6", "--limit", "45", "--passes", "2", "--every", "30"]) == 0
    out = capsys.readouterr().out
    assert "input    30: accuracy over the last 30" in out
    assert "held-out accuracy" in out and "bit-exact with the golden model's after 60" in out
    with pytest.raises(SystemExit):
        example.main(["--limit", "3"])
