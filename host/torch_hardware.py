"""The hardware SP behind TorchSP's interface: a PyTorch pipeline swaps the software layer for
the array (its compiled Verilator model, or a board on a serial port) by changing one argument.

    sp = spatial_pooler(cfg, target="torch", device="cuda")          # TorchSP
    sp = spatial_pooler(cfg, target="verilator", cells_per_pe=3)      # the array in Verilator
    sp = spatial_pooler(cfg, target="serial:/dev/ttyUSB1")            # a board
    active = sp.step(x, learn=True); outputs = sp(X)                  # the same calls

`HardwareSP` streams through the host `Driver`: `step`, `run`, `infer` and `forward` as
TorchSP has them for one instance (outputs (1, H, W) and (T, 1, H, W) bool tensors), and the
state through the protocol's load and read-back: `state()`, `set_state()`, `to_golden()`, and a
`state_dict()` with TorchSP's keys and shapes, so a state learned by a TorchSP (on a GPU, say)
loads into the hardware and back.
"""

from __future__ import annotations

import numpy as np
import torch

from cellsp.sim import GoldenModel, SPConfig, SPState
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.torch_sp import TorchSP

from .targets import open_driver

__all__ = ["HardwareSP", "spatial_pooler", "STATE_KEYS"]

#: the state_dict entries TorchSP and HardwareSP share (instance axis first)
STATE_KEYS = ("seeds", "potential", "permanences", "active_duty", "overlap_duty", "boost")


def spatial_pooler(config: SPConfig, target: str = "torch", device=None, instances: int = 1,
                   **hardware) -> torch.nn.Module:
    """A TorchSP (target 'torch', on `device`, `instances` in lockstep) or a HardwareSP on
    target 'verilator', 'amaranth' or 'serial:PORT[@BAUD]' (one instance; `hardware` are
    HardwareSP's keyword arguments)."""
    if target == "torch":
        if hardware:
            raise ValueError(f"options {sorted(hardware)} apply to a hardware target, not to "
                             f"'torch'")
        return TorchSP(config, instances=instances, device=device)
    if instances != 1:
        raise ValueError(f"a hardware target holds one SP, not {instances}: use target 'torch' "
                         f"for instances in lockstep")
    return HardwareSP(config, target=target, **hardware)


class HardwareSP(torch.nn.Module):
    """One SP on the array behind the host `Driver` (see the module docstring). The device is
    opened and loaded with the config's initial state (or `state`) on construction; `close()`
    (or a `with` block) ends the link. `cycles` holds the array's cycle count of each input of
    the last `step` or `run`."""

    instances = 1

    def __init__(self, config: SPConfig, target: str = "verilator", cells_per_pe: int = 1,
                 parallel_count: bool = False, input_width: int | None = None,
                 timeout: float = 5.0, state: SPState | None = None, log=None):
        super().__init__()
        self.config = config
        self.target = target
        self.geometry = ArrayGeometry.for_config(config, input_width=input_width,
                                                 cells_per_pe=cells_per_pe,
                                                 parallel_count=parallel_count)
        self._golden = GoldenModel(config)      # the checks of a state to load
        # TorchSP's state_dict layout, for conversions; not a submodule (its buffers are not
        # this module's state: the device holds that)
        object.__setattr__(self, "_layout", TorchSP(config))
        self.driver = open_driver(target, self.geometry, timeout=timeout, log=log)
        try:
            self.set_state(0, state if state is not None else self._golden.state())
        except BaseException:
            self.driver.close()
            raise
        self.cycles = np.zeros(0, np.int64)

    def extra_repr(self) -> str:
        """The target and geometry, for print(module)."""
        cfg = self.config
        return (f"target={self.target!r}, cells={cfg.cell_shape[0]}x{cfg.cell_shape[1]}, "
                f"cells_per_pe={self.geometry.cells_per_pe}")

    # ------------------------------------------------------------------ inputs and outputs

    def _inputs(self, x, batch: bool) -> np.ndarray:
        """x as a NumPy array without an instance axis (one of length 1 is dropped)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        lead = 1 if batch else 0
        if x.ndim == lead + 3:
            if x.shape[lead] != 1:
                raise ValueError(f"input has shape {x.shape}: its instance axis (axis {lead}) "
                                 f"has {x.shape[lead]} entries; the hardware holds 1 instance")
            x = x.reshape(x.shape[:lead] + x.shape[lead + 1:])
        return x

    def step(self, x, *, learn: bool) -> torch.Tensor:
        """One input (Hin, Win): the (1, H, W) bool map of active cells."""
        active, cycles = self.driver.step(self._inputs(x, False), learn=bool(learn))
        self.cycles = np.array([cycles], np.int64)
        return torch.from_numpy(np.asarray(active, bool)[None].copy())

    def run(self, X, *, learn, progress=None, window: int = 8) -> torch.Tensor:
        """Inputs (T, Hin, Win): (T, 1, H, W) active maps. `learn` is a bool or T flags; up to
        `window` inputs are in flight on the link."""
        X = self._inputs(X, True)
        t = len(X)
        try:
            flags = np.broadcast_to(np.asarray(learn, dtype=bool), (t,))
        except ValueError:
            raise ValueError(f"learn must be a bool or {t} flags, got shape "
                             f"{np.shape(learn)}") from None
        outs, cycles = [], []
        start = 0
        while start < t:
            stop = start + 1
            while stop < t and flags[stop] == flags[start]:
                stop += 1
            out, cyc = self.driver.run(X[start:stop], learn=bool(flags[start]), window=window,
                                       progress=progress)
            outs.append(np.asarray(out, bool))
            cycles.append(np.asarray(cyc, np.int64))
            start = stop
        h, w = self.config.cell_shape
        self.cycles = np.concatenate(cycles) if cycles else np.zeros(0, np.int64)
        out = np.concatenate(outs) if outs else np.zeros((0, h, w), bool)
        return torch.from_numpy(out[:, None].copy())

    def infer(self, X, progress=None) -> torch.Tensor:
        """(T, 1, H, W) active maps without learning; the state does not change."""
        return self.run(X, learn=False, progress=progress)

    def forward(self, X) -> torch.Tensor:
        """`run(X, learn=self.training)`, as TorchSP's forward."""
        return self.run(X, learn=self.training)

    # ------------------------------------------------------------------ state

    def _instance(self, instance: int) -> None:
        if instance != 0:
            raise ValueError(f"instance {instance!r} does not exist: the hardware holds 1 (0)")

    def state(self, instance: int = 0) -> SPState:
        """The device's whole state, read back through the protocol."""
        self._instance(instance)
        return self.driver.read_state()

    def set_state(self, instance: int, state: SPState) -> None:
        """Load a whole state into the device, checked first as `GoldenModel.set_state`
        checks it."""
        self._instance(instance)
        self._golden.set_state(state)
        self.driver.load_state(self._golden.state())

    def to_golden(self, instance: int = 0) -> GoldenModel:
        """A GoldenModel with the device's config and state."""
        model = GoldenModel(self.config)
        model.set_state(self.state(instance))
        return model

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """TorchSP's state entries (its layout, one instance), read back from the device."""
        self._layout.set_state(0, self.state())
        for key, value in self._layout.state_dict().items():
            destination[prefix + key] = value.clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Load TorchSP's state entries (one instance of this config's seed) into the device."""
        mine = {k: state_dict[prefix + k] for k in STATE_KEYS if prefix + k in state_dict}
        missing_keys.extend(prefix + k for k in STATE_KEYS if k not in mine)
        if len(mine) < len(STATE_KEYS):
            return
        seeds = mine["seeds"].tolist()
        if seeds != [self.config.seed]:
            error_msgs.append(f"the state is of seeds {seeds}; this hardware SP holds one "
                              f"instance of seed {self.config.seed}")
            return
        try:
            self._layout.load_state_dict({k: v.cpu() for k, v in mine.items()})
            self.set_state(0, self._layout.state(0))
        except (RuntimeError, ValueError) as exc:
            error_msgs.append(str(exc))

    def close(self) -> None:
        """End the link (a Verilator model's process ends)."""
        self.driver.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
