"""`cellsp run`: stream an .npy of inputs through the hardware SP and save its outputs (and its
final state). Everything is checked before the model is built or the device opened; a run that
fails or is interrupted part-way writes the outputs computed so far and says how many."""

from __future__ import annotations

import contextlib
import json
import pickle

import numpy as np
from tqdm import tqdm

from cellsp.host import targets
from cellsp.host.files import (UsageError, atomic_path, input_file, output_file, save_npy,
                               write_text)
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.inputs import check_binary

from .errors import stopped_part_way
from .options import add_command, add_force, add_hardware, hardware

__all__ = ["add_parser", "RUN_BLOCK", "load_inputs", "load_state"]

#: `cellsp run` streams its inputs to the driver in blocks of this many, keeping each block's
#: outputs as it completes (what a failure part-way still writes)
RUN_BLOCK = 512


def add_parser(sub) -> None:
    """Declare `cellsp run`."""
    p = add_command(sub, "run", run, help="stream an .npy of inputs through the hardware SP",
                    description="Inputs, state and paths are checked before the model is "
                                "built. A run that fails or is interrupted part-way writes the "
                                "outputs computed so far to OUTPUTS and says how many.")
    p.add_argument("inputs", metavar="INPUTS.npy", help="(T, Hin, Win) bool or 0/1 array")
    p.add_argument("output", metavar="OUTPUTS.npy",
                   help="where to save (T, H, W) active cells (.npy appended when missing; "
                        "with --no-outputs, the steps and check as JSON, .json appended)")
    add_hardware(p, default_cells_per_pe=16)
    p.add_argument("--learn", action="store_true", help="learn on every input")
    p.add_argument("--state", metavar="FILE.npz", help="start from a saved golden-model state")
    p.add_argument("--no-outputs", action="store_true",
                   help="leave the output maps on the device (BATCH requests, the fastest way "
                        "to learn through a UART): save the count of steps applied and the "
                        "CRC-32 of all their maps (the golden model's maps give the same: "
                        "cellsp.sim.wire.maps_check)")
    p.add_argument("--save-state", metavar="FILE.npz",
                   help="save the final state (.npz appended when missing)")
    add_force(p, "OUTPUTS and the --save-state file")


def load_inputs(path: str, cfg: SPConfig) -> np.ndarray:
    """The inputs of `cellsp run`, checked against `cfg`: (T, Hin, Win) bool, T >= 1."""
    what = f"INPUTS {path!r}"
    input_file(path, "INPUTS", "give an .npy file of (T, Hin, Win) 0/1 inputs (numpy.save)")
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise UsageError(f"cannot read {what} as an .npy array ({' '.join(str(exc).split())}); "
                         f"write the inputs with numpy.save") from None
    if isinstance(X, np.lib.npyio.NpzFile):
        names = list(X.files)
        X.close()
        raise UsageError(f"{what} is an .npz archive (arrays {names}), not an .npy array; save "
                         f"the inputs alone with numpy.save('inputs.npy', X)")
    if X.ndim == 0:
        raise UsageError(f"{what} holds a single value (a 0-d array); give a (T, "
                         f"{cfg.input_shape[0]}, {cfg.input_shape[1]}) array of inputs")
    if X.ndim == 2:
        X = X[None]
    try:
        X = check_binary(X, cfg.input_shape, batch=True, what="the config's input_shape")
    except ValueError as exc:
        hint = ("give inputs of that shape, or the config they were made for (--config FILE)"
                if X.shape[1:] != tuple(cfg.input_shape) or X.ndim != 3
                else "make the inputs 0/1 (bool) first")
        raise UsageError(f"{what}: {exc}; {hint}") from None
    if len(X) == 0:
        raise UsageError(f"{what} holds no inputs (shape {X.shape}); give at least one")
    return X


def load_state(path: str, cfg: SPConfig):
    """The `--state` file's state, checked against `cfg` (the config it was saved with)."""
    input_file(path, "--state", "give a state file written by `cellsp run --save-state`")
    try:
        model = GoldenModel.load(path)
    except ValueError as exc:
        raise UsageError(f"{exc}; give a state file written by `cellsp run --save-state`") \
            from None
    if model.config != cfg:
        def shown(c):
            return (f"config {c.hash[:12]}, {c.cell_shape[0]}x{c.cell_shape[1]} cells, "
                    f"{c.input_shape[0]}x{c.input_shape[1]} inputs")
        raise UsageError(f"--state {path!r} was saved with another config ({shown(model.config)}) "
                         f"than this run's ({shown(cfg)}); pass the config it was saved with "
                         f"(--config FILE), or a state saved with this one")
    return model.state()


def _partial(exc: BaseException):
    """What a failing driver attached to `exc` or to the exception it interrupted (closing
    the link may raise in turn): (outputs, cycles) of a run with outputs, (steps, check) of one
    without; or None."""
    for error in (exc, exc.__context__):
        partial = getattr(error, "partial", None)
        if partial is not None:
            return partial
    return None


def _save_state(driver, config, path) -> None:
    """Read the device's state back and write it to `path` (.npz) atomically."""
    model = GoldenModel(config)
    model.set_state(driver.read_state())
    with atomic_path(path) as tmp:
        model.save(tmp)


@contextlib.contextmanager
def _loaded_driver(transport, geometry, start, total: int):
    """The driver of `transport` with the state `start` loaded, and a progress bar over
    `total` inputs. A caller's ``as`` target is bound only once the state is on the device:
    a failure before that has nothing to keep."""
    with targets.open_driver(transport, geometry, log=print) as driver:
        driver.load_state(start)
        with tqdm(total=total, unit="input", leave=False, dynamic_ncols=True,
                  disable=None) as bar:
            yield driver, bar


def run(args) -> int:
    """Stream the inputs through the hardware SP and save the outputs (see the module
    docstring)."""
    cfg, p, transport = hardware(args)
    output = output_file(args.output, ".json" if args.no_outputs else ".npy", args.force,
                         "OUTPUTS")
    save_state = args.save_state and output_file(args.save_state, ".npz", args.force,
                                                 "--save-state")
    X = load_inputs(args.inputs, cfg)
    start = load_state(args.state, cfg) if args.state else GoldenModel(cfg).state()
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=p, parallel_count=args.parallel)
    T = len(X)
    if args.no_outputs:
        return run_without_outputs(args, transport, geometry, X, start, output, save_state)
    outs, cycles = [], []
    driver = None
    try:
        with _loaded_driver(transport, geometry, start, T) as (driver, bar):
            for first in range(0, T, RUN_BLOCK):
                out, cyc = driver.run(X[first:first + RUN_BLOCK], learn=args.learn, window=8,
                                      progress=bar.update)
                outs.append(out)
                cycles.append(cyc)
            if save_state:
                _save_state(driver, cfg, save_state)
    except (Exception, KeyboardInterrupt) as exc:
        if driver is None:      # stopped before the state was on the device
            raise
        partial = _partial(exc)
        if partial is not None:
            outs.append(np.asarray(partial[0], bool))
            cycles.append(np.asarray(partial[1]))
        done = sum(len(o) for o in outs)
        kept = "no output was complete, nothing written"
        if done:
            save_npy(output, np.concatenate(outs))
            kept = (f"wrote {'those' if done < T else 'all'} {done:,} outputs to {output}"
                    + ("; the state was not saved" if save_state else ""))
        raise stopped_part_way(exc, f"after {done:,} of {T:,} inputs", kept) from exc
    out, cycles = np.concatenate(outs), np.concatenate(cycles)
    save_npy(output, out)
    print(f"cellsp run: {T:,} inputs, {out.mean():.1%} cells active on average, "
          f"{cycles.mean():.0f} cycles of latency per input (with 8 in flight, it includes the "
          f"wait behind the step before); wrote {output}"
          + (f" and {save_state}" if save_state else ""))
    return 0


def run_without_outputs(args, transport, geometry, X, start, output, save_state) -> int:
    """`cellsp run --no-outputs`: the inputs in BATCH requests; writes the count of steps and
    the check of their maps (`cellsp.sim.wire.maps_check`) as JSON, also after a failure
    part-way (the steps applied before it)."""
    T = len(X)
    driver = None

    def save(steps, check):
        write_text(output, json.dumps({"steps": int(steps), "maps_check": f"0x{check:08x}",
                                       "learn": bool(args.learn), "inputs": T}, indent=1)
                   + "\n")
    try:
        with _loaded_driver(transport, geometry, start, T) as (driver, bar):
            # 8 BATCHes in flight: a board's array outpaces its UART (the iCEBreaker's, which
            # does not, has no BATCH), so its receive FIFO never fills
            steps, check = driver.run(X, learn=args.learn, outputs=False, window=8,
                                      progress=bar.update)
            if save_state:
                _save_state(driver, geometry.config, save_state)
    except (Exception, KeyboardInterrupt) as exc:
        if driver is None:      # stopped before the state was on the device
            raise
        partial = _partial(exc) or (0, 0)
        kept = "no step was applied, nothing written"
        if partial[0]:
            save(*partial)
            kept = (f"wrote the count and check of those {partial[0]:,} steps to {output}"
                    + ("; the state was not saved" if save_state else ""))
        raise stopped_part_way(exc, f"after {partial[0]:,} of {T:,} inputs",
                               kept) from exc
    save(steps, check)
    print(f"cellsp run: {steps:,} inputs {'learned' if args.learn else 'stepped'}, the CRC-32 "
          f"of their maps 0x{check:08x} (the maps stay on the device); wrote {output}"
          + (f" and {save_state}" if save_state else ""))
    return 0
