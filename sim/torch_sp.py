"""The cellular spatial pooler as a PyTorch layer: SPEC.md in integer tensors, bit-identical to
`GoldenModel`, learning online, with many independent SPs of one geometry stepping in lockstep.

    sp = TorchSP(SPConfig(), instances=16, device="cuda")   # seeds config.seed + 0 .. 15
    active = sp.step(x, learn=True)          # x (Hin, Win) for all, or (16, Hin, Win): (16, H, W)
    outputs = sp.run(X, learn=False)         # X (T, Hin, Win) or (T, 16, Hin, Win): (T, 16, H, W)
    sp.train(); outputs = sp(X)              # forward: learns online in training mode
    sp.to_golden(3)                          # instance 3 as a GoldenModel, state included

Every instance has its own seed, hence its own potential pools and initial permanences (those
of `GoldenModel(config.replace(seed=...))`), its own duty cycles and boost factors. All state
is in buffers: `state_dict()` round-trips, and `state(i)` / `set_state(i, ...)` convert to and
from the golden model's `SPState` (so a state learned here loads into the hardware and back).

The 3x3 exchange that the array does with a neighbour register per cell is written as eight
shifted views of a padded (H, W, instances) tensor (wrap: the opposite edge; clip: absent).

Layout: the instance axis is the last, contiguous one (as cells are in the golden model's
slot-major arrays), so every gather, shift and reduction moves whole rows of instances:
`permanences` and `potential` are (window, H, W, instances), `active_duty`, `overlap_duty` and
`boost` (H, W, instances), `seeds` (instances,). `state(i)` gives the golden model's shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import MIN_DUTY_FRAC_BITS, SPConfig
from .golden import GoldenModel, SPState, check_inputs
from .inputs import flag_runs
from .layout import initial_permanences, layout

__all__ = ["TorchSP"]

# Batched inference builds a dense (instances x cells x inputs) float32 weight matrix per
# chunk of instances of up to this many entries, and inhibits up to this many (input, cell)
# pairs at a time.
_DENSE_LIMIT = 1 << 24
_INHIBIT_LIMIT = 1 << 22
# Grids of fewer values than this take the 3x3 exchange in the fewest tensor operations;
# larger ones in the least memory traffic (see _neighbourhoods and _box).
_SMALL_GRID = 1 << 14


def _seeds(config: SPConfig, instances: int, seeds) -> list[int]:
    """Each instance's seed: `seeds` as given (checked), or config.seed + i."""
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ValueError(f"instances must be a positive integer, got {instances!r}")
    if seeds is None:
        seeds = [config.seed + i for i in range(instances)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != instances:
        raise ValueError(f"seeds has {len(seeds)} values for {instances} instances; give one "
                         f"seed per instance")
    return seeds


class TorchSP(torch.nn.Module):
    """`instances` independent cellular SPs of one config (seeds differ), bit-exact to one
    `GoldenModel` each; see the module docstring.

    Inputs may be NumPy arrays or tensors of bools or 0/1 integers; outputs are bool tensors on
    the module's device with an instance axis: `step` returns (instances, H, W), `run` and
    `forward` (T, instances, H, W). Bad inputs raise the golden model's ValueError, before
    anything is computed.

    `seeds`: one per instance (default config.seed + i). `progress`, if given, is called with 1
    as each instance's pools and permanences are drawn (4,096 instances take a minute).
    """

    def __init__(self, config: SPConfig | None = None, instances: int = 1,
                 seeds: Sequence[int] | None = None, device=None, progress=None):
        super().__init__()
        self.config = cfg = config if config is not None else SPConfig()
        seeds = _seeds(cfg, instances, seeds)
        self.instances = instances
        h, w = cfg.cell_shape
        n, window = cfg.num_cells, cfg.window_size
        # 3 * Pmax bounds every intermediate of a permanence update (see _update_permanences)
        self.perm_dtype = torch.int16 if 3 * cfg.perm_max < 2**15 else torch.int32
        base = layout(cfg)
        potential = np.empty((window, n, instances), bool)
        perms = np.empty((window, n, instances), np.int16 if self.perm_dtype == torch.int16
                         else np.int32)
        for i, seed in enumerate(seeds):
            pools = base.potential if seed == cfg.seed else layout(cfg.replace(seed=seed)).potential
            potential[:, :, i] = pools.T
            perms[:, :, i] = initial_permanences(cfg.replace(seed=seed), pools).T
            if progress:
                progress(1)
        shape = (h, w, instances)
        self.register_buffer("seeds", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("potential", torch.from_numpy(potential).reshape((window,) + shape))
        self.register_buffer("permanences", torch.from_numpy(perms).reshape((window,) + shape))
        self.register_buffer("active_duty", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("overlap_duty", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("boost", torch.full(shape, cfg.boost_one, dtype=torch.int32))
        # derived from the config: not part of the state
        q = cfg.boost_index_bits
        m = torch.from_numpy(base.neighbourhood_size.astype(np.int64)).reshape(h, w, 1)
        key_bits = (n << cfg.boosted_bits).bit_length()
        self.key_dtype = torch.int32 if key_bits < 31 else torch.int64
        static = {
            "input_index": torch.from_numpy(base.input_index.T.astype(np.int64)),
            "table": torch.tensor(cfg.boost_table, dtype=torch.int64),
            "neighbourhood_size": m,
            "tie": torch.arange(n - 1, -1, -1, dtype=self.key_dtype).reshape(h, w, 1),
            "flat_index": torch.from_numpy(base.input_index.T.astype(np.int64).reshape(-1)),
            "boost_offset": m * ((1 << cfg.duty_bits) * (1 + (2 << q))),
            "boost_divisor": m << (cfg.duty_bits + 1),
            "cap": torch.zeros((window,) + shape, dtype=self.perm_dtype),
            "perm_floor": torch.tensor(0, dtype=self.perm_dtype),
            "wrap_rows": torch.tensor([h - 1] + list(range(h)) + [0], dtype=torch.int64),
            "wrap_cols": torch.tensor([w - 1] + list(range(w)) + [0], dtype=torch.int64),
            "threshold": torch.tensor(cfg.connected_threshold, dtype=self.perm_dtype),
        }
        for name, value in static.items():
            self.register_buffer(name, value, persistent=False)
        self._refresh_cap()
        self.register_load_state_dict_post_hook(lambda module, keys: module._refresh_cap())
        #: the last step's intermediate values (overlap, boosted, active), for inspection
        self.last: dict[str, torch.Tensor] = {}
        if device is not None:
            self.to(device)

    def _refresh_cap(self) -> None:
        """The upper bound of every slot: Pmax in the potential pool, 0 outside it."""
        self.cap.copy_(self.potential.to(self.perm_dtype) * self.config.perm_max)

    @property
    def device(self) -> torch.device:
        """The device the state lives on."""
        return self.permanences.device

    def extra_repr(self) -> str:
        """The geometry and instance count, for print(module)."""
        cfg = self.config
        return (f"instances={self.instances}, cells={cfg.cell_shape[0]}x{cfg.cell_shape[1]}, "
                f"input={cfg.input_shape[0]}x{cfg.input_shape[1]}, edge={cfg.edge}, "
                f"winners={cfg.winners}")

    # ------------------------------------------------------------------ golden-model state

    def golden_config(self, instance: int = 0) -> SPConfig:
        """The config of one instance: the module's config with that instance's seed."""
        return self.config.replace(seed=int(self.seeds[self._instance(instance)]))

    def _instance(self, instance: int) -> int:
        if isinstance(instance, bool) or not isinstance(instance, int) \
                or not 0 <= instance < self.instances:
            raise ValueError(f"instance {instance!r} does not exist: this module has "
                             f"{self.instances} (0 .. {self.instances - 1})")
        return instance

    def state(self, instance: int = 0) -> SPState:
        """The whole state of one instance, as the golden model holds it (NumPy, CPU)."""
        i = self._instance(instance)
        return SPState(self.permanences[..., i].permute(1, 2, 0).cpu().numpy().astype(np.uint16),
                       self.active_duty[..., i].cpu().numpy().astype(np.uint32),
                       self.overlap_duty[..., i].cpu().numpy().astype(np.uint32),
                       self.boost[..., i].cpu().numpy().astype(np.uint16))

    def set_state(self, instance: int, state: SPState) -> None:
        """Replace one instance's whole state, checked as `GoldenModel.set_state` checks it
        (same errors; a state of another seed is refused)."""
        model = GoldenModel(self.golden_config(instance))
        model.set_state(state)
        self._load_golden(instance, model)

    def _load_golden(self, i: int, model: GoldenModel) -> None:
        s = model.state()
        with torch.no_grad():
            self.permanences[..., i].copy_(
                torch.from_numpy(s.permanences.astype(np.int32)).permute(2, 0, 1))
            self.active_duty[..., i].copy_(torch.from_numpy(s.active_duty.astype(np.int32)))
            self.overlap_duty[..., i].copy_(torch.from_numpy(s.overlap_duty.astype(np.int32)))
            self.boost[..., i].copy_(torch.from_numpy(s.boost.astype(np.int32)))

    def to_golden(self, instance: int = 0) -> GoldenModel:
        """A `GoldenModel` with one instance's config (its seed) and state."""
        model = GoldenModel(self.golden_config(instance))
        model.set_state(self.state(instance))
        return model

    @classmethod
    def from_golden(cls, models: Sequence[GoldenModel], device=None) -> "TorchSP":
        """One instance per golden model, with its seed and state; the configs must be equal
        apart from the seed."""
        models = list(models)
        if not models:
            raise ValueError("from_golden needs at least one GoldenModel")
        first = models[0].config
        for m in models[1:]:
            if m.config.replace(seed=first.seed) != first:
                raise ValueError(f"the models' configs differ in more than the seed "
                                 f"({m.config.hash} against {first.hash}); lockstep instances "
                                 f"share one geometry")
        sp = cls(first, instances=len(models), seeds=[m.config.seed for m in models])
        for i, m in enumerate(models):
            sp._load_golden(i, m)
        if device is not None:
            sp.to(device)
        return sp

    # ------------------------------------------------------------------ inputs

    def _checked(self, x, batch: bool) -> tuple[torch.Tensor, bool]:
        """x as a bool tensor on the device, and whether it has an instance axis. Shapes and
        values are checked as the golden model checks them (its message on an error)."""
        cfg = self.config
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        lead = 1 if batch else 0
        per_instance = t.ndim == lead + 3
        if per_instance and t.shape[lead] != self.instances:
            raise ValueError(f"input has shape {tuple(t.shape)}: its instance axis (axis "
                             f"{lead}) has {t.shape[lead]} entries for {self.instances} "
                             f"instances; give one input for all, or one per instance")
        if per_instance:
            # the golden model's checks, on the inputs with their instance axis folded in
            shape = (-1,) + tuple(t.shape[lead + 1:])
            flat, flat_batch = t.reshape(shape), True
        else:
            flat, flat_batch = t, batch
        if (flat.ndim != (3 if flat_batch else 2)
                or tuple(flat.shape[-2:]) != tuple(cfg.input_shape)
                or t.dtype.is_floating_point or t.dtype.is_complex
                or (t.dtype != torch.bool and bool(((t != 0) & (t != 1)).any()))):
            check_inputs(cfg, flat.cpu().numpy(), batch=flat_batch)   # raises its ValueError
            raise ValueError(f"input has shape {tuple(t.shape)} and dtype {t.dtype}; expected "
                             f"bools or 0/1 integers of shape {'(T, ' if batch else '('}"
                             f"[{self.instances},] {cfg.input_shape[0]}, "
                             f"{cfg.input_shape[1]})")
        return t.to(device=self.device, dtype=torch.bool), per_instance

    # ------------------------------------------------------------------ the 3x3 exchange

    def _padded(self, grid: torch.Tensor, absent: int) -> torch.Tensor:
        """grid (..., H, W, I) with a one-cell border around (H, W): the opposite edge
        ('wrap') or `absent` ('clip'). A small grid is padded by two gathers (fewest
        operations), a large one by copying whole edge slabs."""
        if self.config.edge == "clip":
            return F.pad(grid, (0, 0, 1, 1, 1, 1), value=absent)
        if grid.numel() < _SMALL_GRID:
            return grid.index_select(-3, self.wrap_rows).index_select(-2, self.wrap_cols)
        grid = torch.cat([grid[..., -1:, :, :], grid, grid[..., :1, :, :]], dim=-3)
        return torch.cat([grid[..., :, -1:, :], grid, grid[..., :, :1, :]], dim=-2)

    def _neighbourhoods(self, grid: torch.Tensor, absent: int) -> torch.Tensor:
        """(9, ..., H, W, I): what each cell of grid (..., H, W, I) reads from the cells of
        its 3x3 neighbourhood (itself at index 4), `absent` beyond a clipped border. The
        software form of the neighbour register: nine shifted views of the padded grid (for a
        small grid one `unfold`, the nine shifted strides at once), laid out as nine copies."""
        h, w = self.config.cell_shape
        padded = self._padded(grid, absent)
        if grid.numel() < _SMALL_GRID:
            windows = padded.unfold(-3, 3, 1).unfold(-3, 3, 1)
            return windows.movedim((-2, -1), (0, 1)).reshape((9,) + tuple(grid.shape))
        return torch.stack([padded[..., dy:dy + h, dx:dx + w, :]
                            for dy in range(3) for dx in range(3)])

    def _box(self, grid: torch.Tensor, op: str) -> torch.Tensor:
        """The sum (op "sum") or maximum ("amax") over each 3x3 neighbourhood including the
        cell, for non-negative grid (..., H, W, I); absent neighbours count as 0. A small grid:
        one reduction over the nine shifted copies (fewest operations); a large one: two
        separable passes over shifted views, rows then columns (least memory traffic)."""
        if grid.numel() < _SMALL_GRID:
            return getattr(self._neighbourhoods(grid, 0), op)(0)
        fold = torch.add if op == "sum" else torch.maximum
        p = self._padded(grid, 0)
        rows = fold(fold(p[..., :-2, :, :], p[..., 1:-1, :, :]), p[..., 2:, :, :])
        return fold(fold(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])

    def _inhibit(self, boosted: torch.Tensor) -> torch.Tensor:
        """k-winners local inhibition of boosted (..., H, W, I): active cells, bool.
        Keys boosted * cells + (cells - 1 - raster index) are distinct, and a neighbour beats a
        cell exactly when its key is larger (SPEC.md section 5, tie-break by index)."""
        key = boosted.to(self.key_dtype) * self.config.num_cells + self.tie
        # the cell itself, at the centre, never beats itself
        beaten_by = (self._neighbourhoods(key, -1) > key).sum(0, dtype=torch.int8)
        return (boosted > 0) & (beaten_by < self.config.winners)

    @torch.no_grad()
    def exchange(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's three reads of the neighbours (SPEC.md section 10) on the present state:
        inhibition over the last step's boosted overlaps, the 3x3 sum of the active duties and
        the 3x3 maximum of the overlap duties, each (H, W, instances). What `cellsp bench
        torch` times as the exchange's cost."""
        return (self._inhibit(self.last["boosted"]),
                self._box(self.active_duty.to(torch.int64), "sum"),
                self._box(self.overlap_duty.to(torch.int64), "amax"))

    def _boosted(self, overlap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(overlap after the stimulus threshold, (overlap * boost) >> boost_frac_bits); the
        boost is broadcast over any leading batch axis."""
        if self.config.stimulus_threshold > 0:
            overlap = overlap * (overlap >= self.config.stimulus_threshold)
        return overlap, (overlap * self.boost) >> self.config.boost_frac_bits

    # ------------------------------------------------------------------ steps

    def _gather(self, x: torch.Tensor, per_instance: bool) -> torch.Tensor:
        """The input bit under every slot: (window, cells, 1) for one input for all instances,
        (window, cells, instances) for x (instances, Hin, Win)."""
        n, window = self.config.num_cells, self.config.window_size
        if per_instance:
            by_input = x.reshape(self.instances, -1).T.contiguous()      # (inputs, instances)
            return by_input.index_select(0, self.flat_index).view(window, n, self.instances)
        return x.reshape(-1).index_select(0, self.flat_index).view(window, n, 1)

    def step(self, x, *, learn: bool) -> torch.Tensor:
        """One input, (Hin, Win) for every instance or (instances, Hin, Win): returns the
        (instances, H, W) bool map of active cells; learns when `learn` (keyword, required)."""
        x, per_instance = self._checked(x, batch=False)
        return self._step(x, per_instance, bool(learn)).permute(2, 0, 1).contiguous()

    @torch.no_grad()
    def _step(self, x: torch.Tensor, per_instance: bool, learn: bool) -> torch.Tensor:
        """One checked input; returns the active cells (H, W, instances)."""
        cfg = self.config
        shape = self.active_duty.shape
        xin = self._gather(x, per_instance)
        perm = self.permanences.view(cfg.window_size, cfg.num_cells, self.instances)
        connected = perm >= self.threshold      # 0 outside the pool: never connected
        overlap = self._count(connected.logical_and_(xin)).view(shape)
        overlap, boosted = self._boosted(overlap)
        active = self._inhibit(boosted)
        self.last = {"overlap": overlap, "boosted": boosted, "active": active}
        if learn:
            self._update_duty(active, overlap > 0)
            self._update_boost()
            self._update_permanences(xin, active, self._weak())
        return active

    @staticmethod
    def _count(bits: torch.Tensor) -> torch.Tensor:
        """Sums over the window axis of bool (window, ...) as int32: the bools summed as uint8
        (a view, no conversion; a window has at most 225 slots), then widened."""
        return bits.view(torch.uint8).sum(0, dtype=torch.uint8).to(torch.int32)

    def _update_duty(self, active: torch.Tensor, overlapped: torch.Tensor) -> None:
        """duty <- duty - (duty >> period_log2) + hit * 2**(duty_bits - period_log2)."""
        cfg = self.config
        unit = 1 << (cfg.duty_bits - cfg.duty_period_log2)
        for duty, hit in ((self.active_duty, active), (self.overlap_duty, overlapped)):
            duty.sub_(duty >> cfg.duty_period_log2).add_(hit, alpha=unit)

    def _update_boost(self) -> None:
        """Boost from the rounded difference between the neighbourhood's mean active duty and
        the cell's own (SPEC.md section 8, no division by the neighbourhood size):
        table[clamp(floor((diff * 2**(q+1) + m * 2**D) / (m * 2**(D+1))), -2**q, 2**q) + 2**q]
        with the table offset 2**q folded into the numerator."""
        q = self.config.boost_index_bits
        duty = self.active_duty.to(torch.int64)
        total = self._box(duty, "sum")
        diff = total - self.neighbourhood_size * duty
        index = torch.div((diff << (q + 1)) + self.boost_offset, self.boost_divisor,
                          rounding_mode="floor").clamp_(0, 2 << q)
        self.boost.copy_(self.table[index])

    def _weak(self) -> torch.Tensor:
        """Cells whose overlap duty is below the fraction of their neighbourhood's largest."""
        duty = self.overlap_duty.to(torch.int64)
        largest = self._box(duty, "amax")
        weak = (duty << MIN_DUTY_FRAC_BITS) < largest * self.config.min_overlap_duty_q
        self.last["weak"] = weak
        return weak

    def _update_permanences(self, xin: torch.Tensor, active: torch.Tensor,
                            weak: torch.Tensor) -> None:
        """Learning of active cells, then the bump of weak cells, in three passes:
        perm = clamp(perm + a + b, min=b, max=cap), a = +perm_inc / -perm_dec on active cells by
        input bit, b = perm_bump on weak cells, cap = Pmax in the pool and 0 outside it (torch's
        clamp gives cap where b > cap). That is min(max(perm + a, 0) + b, cap): the two
        saturating updates in turn, because b >= 0."""
        cfg = self.config
        n, window = cfg.num_cells, cfg.window_size
        perm = self.permanences.view(window, n, self.instances)
        cap = self.cap.view(window, n, self.instances)
        step = xin.to(self.perm_dtype).mul_(cfg.perm_inc + cfg.perm_dec).sub_(cfg.perm_dec)
        perm.addcmul_(step, active.view(1, n, self.instances).to(self.perm_dtype))
        if cfg.perm_bump:
            bump = weak.view(1, n, self.instances).to(self.perm_dtype).mul_(cfg.perm_bump)
            perm.add_(bump).clamp_(min=bump, max=cap)
        else:
            perm.clamp_(min=self.perm_floor, max=cap)

    # ------------------------------------------------------------------ batches

    def run(self, X, *, learn, progress=None) -> torch.Tensor:
        """A batch, (T, Hin, Win) for every instance or (T, instances, Hin, Win): returns
        (T, instances, H, W) active maps. `learn` is a bool or T flags; learning inputs are
        processed one by one (online), runs of inputs without learning together. `progress`,
        if given, is called with the number of inputs just finished."""
        X, per_instance = self._checked(X, batch=True)
        t = X.shape[0]
        runs = flag_runs(learn, t)
        h, w = self.config.cell_shape
        out = torch.empty((t, self.instances, h, w), dtype=torch.bool, device=self.device)
        for start, stop, learning in runs:
            if learning:
                for k in range(start, stop):
                    out[k] = self._step(X[k], per_instance, True).permute(2, 0, 1)
                    if progress:
                        progress(1)
            else:
                out[start:stop] = self._infer(X[start:stop], per_instance, progress)
        return out

    def infer(self, X, progress=None) -> torch.Tensor:
        """Active maps (T, instances, H, W) for a batch without learning; no state changes."""
        X, per_instance = self._checked(X, batch=True)
        return self._infer(X, per_instance, progress)

    @torch.no_grad()
    def _infer(self, X: torch.Tensor, per_instance: bool, progress) -> torch.Tensor:
        cfg = self.config
        t, i = X.shape[0], self.instances
        (h, w), n, window = cfg.cell_shape, cfg.num_cells, cfg.window_size
        overlap = torch.empty((t, n, i), dtype=torch.int32, device=self.device)
        perm = self.permanences.view(window, n, i)
        if per_instance:
            for k in range(t):
                connected = perm >= self.threshold
                xin = self._gather(X[k], True)
                overlap[k] = self._count(connected.logical_and_(xin))
        else:
            # overlaps as matrix products: a 0/1 float32 weight per (input, cell, instance),
            # exact sums
            flat = X.reshape(t, -1).to(torch.float32)
            chunk = max(1, _DENSE_LIMIT // (n * cfg.num_inputs))
            for first in range(0, i, chunk):
                part = perm[..., first:first + chunk]
                weights = torch.zeros((cfg.num_inputs, n, part.shape[-1]), dtype=torch.float32,
                                      device=self.device)
                index = self.input_index[..., None].expand(part.shape)
                weights.scatter_add_(0, index, (part >= cfg.connected_threshold).to(torch.float32))
                product = flat @ weights.view(cfg.num_inputs, -1)
                overlap[..., first:first + chunk] = product.view(t, n, -1).to(torch.int32)
        out = torch.empty((t, i, h, w), dtype=torch.bool, device=self.device)
        chunk = max(1, _INHIBIT_LIMIT // (i * n))
        for first in range(0, t, chunk):
            _, boosted = self._boosted(overlap[first:first + chunk].view(-1, h, w, i))
            out[first:first + chunk] = self._inhibit(boosted).permute(0, 3, 1, 2)
            if progress:
                progress(boosted.shape[0])
        return out

    def forward(self, X) -> torch.Tensor:
        """`run(X, learn=self.training)`: learns online (input by input, in order) in training
        mode, only infers (batched) in eval mode. X (T, Hin, Win) or (T, instances, Hin, Win)."""
        return self.run(X, learn=self.training)
