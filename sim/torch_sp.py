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
shifted views of a padded (H, W, instances) tensor (wrap: the opposite edge; clip: absent), or
for a small grid as one gather of each cell's nine neighbourhood values.

Layout: the instance axis is the last, contiguous one (as cells are in the golden model's
slot-major arrays), so every gather, shift and reduction moves whole rows of instances:
`permanences` and `potential` are (window, H, W, instances), `active_duty`, `overlap_duty` and
`boost` (H, W, instances), `seeds` (instances,). `state(i)` gives the golden model's shapes.

Speed: permanences are one byte each for perm_bits <= 8 (uint8; int16 or int32 above), and a
learning step never widens them: the update is clamp(perm, lo, hi) + delta with bounds that
keep it in [0, Pmax] (wrapping back into it in uint8), then the bump and the pool's cap. The
input bits under every slot are not gathered: where the cell centres are evenly spaced they
are a strided view of the padded input. A large array goes over the synapses one window slot
at a time, so that its work tensors stay in the cache. The boost is looked up by the duty
difference, steps run in inference mode, and work tensors are kept from step to step.
`TorchSP(..., compile=True)` runs a learning step as the functions of FUSED_STEP through
`torch.compile`: each window slot's overlap (`fused_overlap_add`), the grid arithmetic
(`fused_grid_step`) and each slot's permanence update (`fused_permanence_update`), a few
fused, vectorised loops instead of about 60 tensor operations on the grids and nine on every
synapse (4,096 SPs of 32x32 cells: 83-99 ms of CPU time a step against 184-271 ms eager).
The first learning step compiles (about 20 s in a fresh process, 6-8 s for each further
shape or config; torch caches the kernels on disk), so it pays for many instances: one SP
steps several times slower compiled than eager.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from .config import MIN_DUTY_FRAC_BITS, SPConfig
from .golden import GoldenModel, SPState, check_inputs
from .inputs import flag_runs
from .layout import NEIGHBOUR_OFFSETS, cell_centres, initial_permanences, layout

__all__ = ["FUSED_STEP", "LearningRules", "TorchSP", "fused_grid_step", "fused_overlap_add",
           "fused_permanence_update"]

# Batched inference builds a dense (instances x cells x inputs) float32 weight matrix per
# chunk of instances of up to this many entries, and inhibits up to this many (input, cell)
# pairs at a time.
_DENSE_LIMIT = 1 << 24
_INHIBIT_LIMIT = 1 << 22
# Grids of fewer values than this take the 3x3 exchange in the fewest tensor operations;
# larger ones in the least memory traffic (see _neighbourhoods and _box).
_SMALL_GRID = 1 << 14
# The boost update looks the new boost up by the duty difference where the lookup table has
# at most this many entries (else it divides).
_LOOKUP_LIMIT = 1 << 21
# From this many synapses in one window slot (cells x instances), a step goes over the
# synapses slot by slot (work tensors that stay in the cache) rather than all at once.
_SLOT_LOOP = 1 << 15


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


class LearningRules(NamedTuple):
    """The config's constants that the compiled steps (`fused_grid_step`,
    `fused_permanence_update`) are specialised for: plain ints and bools."""

    wrap: bool
    num_cells: int
    winners: int
    stimulus_threshold: int
    boost_frac_bits: int
    connected_shift: int          # -1: the threshold is not a power of two (a clamp)
    connected_threshold: int
    duty_period_log2: int
    duty_unit: int
    boost_index_bits: int
    min_overlap_duty_q: int
    perm_max: int
    perm_inc: int
    perm_dec: int
    perm_bump: int


def _grid_neighbour(grid: torch.Tensor, dy: int, dx: int, absent: int,
                    wrap: bool) -> torch.Tensor:
    """What each cell of grid (H, W, I) reads from its neighbour (i + dy, j + dx): the
    opposite edge's cell (wrap) or `absent` beyond a clipped border. A rolled view that
    `torch.compile` reads in place (no padded copy)."""
    value = torch.roll(grid, (-dy, -dx), (0, 1))
    if wrap:
        return value
    h, w = grid.shape[0], grid.shape[1]
    rows = torch.arange(h, device=grid.device).view(h, 1, 1) + dy
    cols = torch.arange(w, device=grid.device).view(1, w, 1) + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return torch.where(inside, value, absent)


def _grid_box(grid: torch.Tensor, fold, wrap: bool) -> torch.Tensor:
    """fold (torch.add or torch.maximum) over each 3x3 neighbourhood of a non-negative grid
    (H, W, I), absent neighbours 0: rows, then columns."""
    rows = fold(fold(_grid_neighbour(grid, -1, 0, 0, wrap), grid),
                _grid_neighbour(grid, 1, 0, 0, wrap))
    return fold(fold(_grid_neighbour(rows, 0, -1, 0, wrap), rows),
                _grid_neighbour(rows, 0, 1, 0, wrap))


def fused_grid_step(overlap: torch.Tensor, boost: torch.Tensor, active_duty: torch.Tensor,
                    overlap_duty: torch.Tensor, tie: torch.Tensor,
                    neighbourhood_size: torch.Tensor, boost_lookup_offset: torch.Tensor,
                    boost_by_difference: torch.Tensor, boost_offset: torch.Tensor,
                    boost_divisor: torch.Tensor, table: torch.Tensor, rules: LearningRules,
                    duty_dtype: torch.dtype, key_dtype: torch.dtype):
    """A learning step's arithmetic on the grids (after the overlap, before the permanence
    update), written for `torch.compile`, which fuses it into a few vectorised loops: the
    same rules as TorchSP's eager step (threshold, boost, inhibition, duty cycles, boost
    update, weak test), with the 3x3 exchange as rolled reads (no padded copies) and the masks
    as uint8 0/1 (loops that load bools do not vectorise).

    overlap (H, W, I), the connected synapses on active input bits (int32, or uint8 where
    the window has under 256 slots: a quarter of the memory traffic); the state grids (H, W,
    I), updated in place. Returns (overlap after the stimulus threshold, in its own dtype,
    boosted, active, weak, flags), the last three uint8 (H, W, I): active and weak 0/1, flags
    active + 2 * weak (what the permanence update reads)."""
    r = rules
    if r.stimulus_threshold > 0:
        overlap = overlap * (overlap >= r.stimulus_threshold)
    boosted = (overlap.to(torch.int32) * boost) >> r.boost_frac_bits
    # inhibition: distinct keys, a neighbour beats a cell when its key is larger
    key = tie + boosted.to(key_dtype) * r.num_cells
    beaten_by = sum((_grid_neighbour(key, dy, dx, -1, r.wrap) > key).to(torch.int32)
                    for dy, dx in NEIGHBOUR_OFFSETS)
    active = ((boosted > 0) & (beaten_by < r.winners)).to(torch.uint8)
    # duty cycles
    new_active_duty = active_duty - (active_duty >> r.duty_period_log2) \
        + active.to(active_duty.dtype) * r.duty_unit
    new_overlap_duty = overlap_duty - (overlap_duty >> r.duty_period_log2) \
        + (overlap > 0).to(overlap_duty.dtype) * r.duty_unit
    active_duty.copy_(new_active_duty)
    overlap_duty.copy_(new_overlap_duty)
    # boost, from the neighbourhood's active duties (see TorchSP._update_boost)
    duty = new_active_duty.to(duty_dtype)
    total = _grid_box(duty, torch.add, r.wrap)
    if boost_by_difference.numel():
        index = boost_lookup_offset - neighbourhood_size * duty + total
        boost.copy_(boost_by_difference[index.to(torch.int64)])
    else:
        q = r.boost_index_bits
        index = torch.div(boost_offset + (total - neighbourhood_size * duty) * (2 << q),
                          boost_divisor, rounding_mode="floor").clamp(0, 2 << q)
        boost.copy_(table[index.to(torch.int64)])
    # weak cells, from the overlap duties
    duty = new_overlap_duty.to(duty_dtype)
    largest = _grid_box(duty, torch.maximum, r.wrap)
    weak = ((duty << MIN_DUTY_FRAC_BITS) < largest * r.min_overlap_duty_q).to(torch.uint8)
    return overlap, boosted, active, weak, active | (weak << 1)


def fused_overlap_add(total: torch.Tensor, perm: torch.Tensor, windows: torch.Tensor,
                      rules: LearningRules) -> None:
    """total += connected & input bit over the synapses of one window slot, in place, in
    total's dtype (perm (H, W, I), windows (H, W, I or 1) in the permanences' dtype; connected
    a shift for a power-of-two threshold, else a clamp to [T - 1, T] less T - 1), written for
    `torch.compile` (one vectorised loop, where eager operations take three)."""
    r = rules
    if r.connected_shift >= 0:
        connected = perm >> r.connected_shift
    else:
        t = r.connected_threshold
        connected = perm.clamp(t - 1, t) - (t - 1)
    total.copy_(total + (connected & windows).to(total.dtype))


def fused_permanence_update(perm: torch.Tensor, windows: torch.Tensor, cap: torch.Tensor,
                            flags: torch.Tensor, rules: LearningRules) -> None:
    """The permanence update of `fused_grid_step`'s active and weak cells (flags, uint8
    (H, W, I): active + 2 * weak) on the synapses of one window slot (perm, cap (H, W, I),
    windows (H, W, I or 1), in the permanences' dtype), in place, written for
    `torch.compile` (one vectorised loop): learning clamp(perm + active * (bit ? inc :
    -dec), 0, Pmax), the bump min(perm + weak * bump, Pmax), then min(perm, cap) (0 outside
    the pool)."""
    r = rules
    p = perm.to(torch.int32)
    bits = windows.to(torch.int32)
    cell = flags.to(torch.int32)
    p = (p + (cell & 1) * (bits * (r.perm_inc + r.perm_dec) - r.perm_dec)) \
        .clamp(0, r.perm_max)
    if r.perm_bump:
        p = (p + (cell >> 1) * r.perm_bump).clamp(max=r.perm_max)
    p = torch.minimum(p, cap.to(torch.int32))
    perm.copy_(p.to(perm.dtype))


#: the functions of a fused learning step, in the order TorchSP.fused holds them
FUSED_STEP = (fused_overlap_add, fused_grid_step, fused_permanence_update)


class TorchSP(torch.nn.Module):
    """`instances` independent cellular SPs of one config (seeds differ), bit-exact to one
    `GoldenModel` each; see the module docstring.

    Inputs may be NumPy arrays or tensors of bools or 0/1 integers; outputs are bool tensors on
    the module's device with an instance axis: `step` returns (instances, H, W), `run` and
    `forward` (T, instances, H, W). Bad inputs raise the golden model's ValueError, before
    anything is computed.

    `seeds`: one per instance (default config.seed + i). `progress`, if given, is called with 1
    as each instance's pools and permanences are drawn (4,096 instances take a minute).
    `compile`: learning steps through `torch.compile` (see the module docstring; bit-exact
    too). Torch recompiles a compiled function for each new shape, dtype or config, up to its
    recompile limit (8); past it, the steps of further shapes run uncompiled (same results).
    """

    def __init__(self, config: SPConfig | None = None, instances: int = 1,
                 seeds: Sequence[int] | None = None, device=None, progress=None,
                 compile: bool = False):
        super().__init__()
        self.config = cfg = config if config is not None else SPConfig()
        seeds = _seeds(cfg, instances, seeds)
        self.instances = instances
        h, w = cfg.cell_shape
        n, window = cfg.num_cells, cfg.window_size
        # every intermediate of a permanence update lies in [0, Pmax] or wraps back into it
        # (see _update_permanences): one byte a synapse for perm_bits <= 8
        self.perm_dtype = (torch.uint8 if cfg.perm_max < 2**8 else
                           torch.int16 if cfg.perm_max < 2**15 else torch.int32)
        base = layout(cfg)
        potential = np.empty((window, n, instances), bool)
        perms = np.empty((window, n, instances), {torch.uint8: np.uint8, torch.int16: np.int16,
                                                  torch.int32: np.int32}[self.perm_dtype])
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
        # duty-cycle arithmetic (3x3 sums, the boost index's numerator, the weak test) in
        # int32 where its largest value fits
        duty_one = 1 << cfg.duty_bits
        largest = max((8 * duty_one << (q + 1)) + 9 * duty_one * (1 + (2 << q)),
                      duty_one << MIN_DUTY_FRAC_BITS, duty_one * cfg.min_overlap_duty_q)
        self.duty_dtype = torch.int32 if largest < 2**31 else torch.int64
        m = torch.from_numpy(base.neighbourhood_size.astype(np.int64)).reshape(h, w, 1)
        m = m.to(self.duty_dtype)
        key_bits = (n << cfg.boosted_bits).bit_length()
        self.key_dtype = torch.int32 if key_bits < 31 else torch.int64
        static = {
            "input_index": torch.from_numpy(base.input_index.T.astype(np.int64)),
            "table": torch.tensor(cfg.boost_table, dtype=torch.int32),
            "neighbourhood_size": m,
            "tie": torch.arange(n - 1, -1, -1, dtype=self.key_dtype).reshape(h, w, 1),
            "boost_offset": m * ((1 << cfg.duty_bits) * (1 + (2 << q))),
            "boost_divisor": m << (cfg.duty_bits + 1),
            "cap": torch.zeros((window,) + shape, dtype=self.perm_dtype),
            "perm_top": torch.tensor(cfg.perm_max, dtype=self.perm_dtype),
            # dec, -dec, -inc, inc + dec (modulo 256 in uint8: the byte that adds them)
            "learning_amounts": torch.tensor(
                [v % 256 if self.perm_dtype == torch.uint8 else v
                 for v in (cfg.perm_dec, -cfg.perm_dec, -cfg.perm_inc,
                           cfg.perm_inc + cfg.perm_dec)],
                dtype=self.perm_dtype).view(4, 1, 1, 1),
        }
        own = np.arange(n)
        around = np.where(base.neighbour_index < n, base.neighbour_index, own)
        static["neighbourhood_index"] = torch.from_numpy(
            np.concatenate([around[:4], own[None], around[4:]]).reshape(-1))
        static["absent_count"] = (9 - m).to(self.duty_dtype)
        static["input_flat_index"] = torch.from_numpy(base.input_index.T.reshape(-1)
                                                      .astype(np.int64))
        plan, self.window_starts = self._input_windows_plan()
        static.update(plan)
        for name, value in static.items():
            self.register_buffer(name, value, persistent=False)
        # work tensors reused from step to step (by name; see _work)
        self._workspace: dict[str, torch.Tensor] = {}
        t = cfg.connected_threshold
        shift = t.bit_length() - 1
        self.rules = LearningRules(
            wrap=cfg.edge == "wrap", num_cells=n, winners=cfg.winners,
            stimulus_threshold=cfg.stimulus_threshold, boost_frac_bits=cfg.boost_frac_bits,
            connected_shift=shift if t == 1 << shift and cfg.perm_max < 2 << shift else -1,
            connected_threshold=t, duty_period_log2=cfg.duty_period_log2,
            duty_unit=1 << (cfg.duty_bits - cfg.duty_period_log2), boost_index_bits=q,
            min_overlap_duty_q=cfg.min_overlap_duty_q, perm_max=cfg.perm_max,
            perm_inc=cfg.perm_inc, perm_dec=cfg.perm_dec, perm_bump=cfg.perm_bump)
        #: the dtype a step sums the overlap in, slot by slot: bytes where the permanences are
        #: bytes and a window has under 256 slots (a quarter of int32's memory traffic)
        self.overlap_dtype = torch.uint8 if self.perm_dtype == torch.uint8 \
            and cfg.window_size < 256 else torch.int32
        #: the functions that learning steps run (as FUSED_STEP: overlap, grid step,
        #: permanence update), through `torch.compile` with `compile` (compiled on the first
        #: learning step, again for each new shape); None: eager tensor operations
        self.fused = None
        if compile:
            self.fused = tuple(torch.compile(f, dynamic=False) for f in FUSED_STEP)
        for name in ("boost_by_difference", "boost_lookup_offset"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32), persistent=False)
        #: grids (H x W x instances) of fewer values than this take the 3x3 exchange in the
        #: fewest tensor operations, larger ones in the least memory traffic
        self.small_grid = _SMALL_GRID
        #: from this many synapses a slot (cells x instances), a step works on the synapses
        #: one window slot at a time (see _slots)
        self.slot_loop = _SLOT_LOOP
        self._refresh_cap()
        self.rebuild_boost_lookup()
        self.register_load_state_dict_post_hook(lambda module, keys: module._refresh_cap())
        #: the last step's intermediate values (overlap, boosted, active; weak after a
        #: learning step), for inspection (a fused step keeps the overlap in bytes)
        self.last: dict[str, torch.Tensor] = {}
        if device is not None:
            self.to(device)

    def rebuild_boost_lookup(self) -> None:
        """The boost of every (neighbourhood size m, duty difference diff = 3x3 sum - m *
        duty) as one table, `boost_by_difference`, computed by the rule of _update_boost from
        `boost_offset`, `boost_divisor` and `table` (rebuild after changing them), and each
        cell's offset into it, `boost_lookup_offset` (its size's block + the largest |diff|).
        Left empty, and the boost divided out each step, when the table would exceed
        _LOOKUP_LIMIT entries (wide duty cycles)."""
        cfg = self.config
        q, half = cfg.boost_index_bits, 8 << cfg.duty_bits
        sizes = self.neighbourhood_size.view(-1).cpu()
        classes = torch.unique(sizes).tolist()
        span = 2 * half + 1
        device = self.table.device
        if len(classes) * span > _LOOKUP_LIMIT:
            self.boost_by_difference = torch.zeros(0, dtype=torch.int32, device=device)
            self.boost_lookup_offset = torch.zeros(0, dtype=self.duty_dtype, device=device)
            return
        diff = torch.arange(-half, half + 1, dtype=torch.int64)
        offsets, divisors = self.boost_offset.view(-1).cpu(), self.boost_divisor.view(-1).cpu()
        blocks, cell_offset = [], torch.empty(sizes.shape, dtype=torch.int64)
        for k, size in enumerate(classes):
            first = int(torch.nonzero(sizes == size)[0])
            index = torch.div((diff << (q + 1)) + int(offsets[first]), int(divisors[first]),
                              rounding_mode="floor").clamp_(0, 2 << q)
            blocks.append(self.table.cpu()[index])
            cell_offset[sizes == size] = k * span + half
        self.boost_by_difference = torch.cat(blocks).to(device)
        self.boost_lookup_offset = cell_offset.view(self.neighbourhood_size.shape) \
            .to(device=device, dtype=self.duty_dtype)

    def _input_windows_plan(self) -> tuple[dict[str, torch.Tensor], tuple | None]:
        """Where each cell's window lies in the padded input (the input with a border of
        potential_radius: the opposite edge for 'wrap', zeros for 'clip'): per axis, the padded
        coordinate of window row (column) a of cell row (column) i is centre(i) + a.
        Returns the index tensors (`window_rows` (side * H) and `window_cols` (side * W),
        a-major; `pad_rows`, `pad_cols`: the input rows and columns of the padded input for
        'wrap') and ((first centre, centre step) per axis) when the centres are evenly spaced
        (then the windows are a strided view of the padded input), else None."""
        cfg = self.config
        (h, w), (hin, win) = cfg.cell_shape, cfg.input_shape
        r, side = cfg.potential_radius, cfg.window_side
        plan, starts = {}, []
        for name, cells, inputs in (("rows", h, hin), ("cols", w, win)):
            centres = cell_centres(cells, inputs)
            plan[f"window_{name}"] = torch.from_numpy(
                (centres[None, :] + np.arange(side)[:, None]).reshape(-1))
            plan[f"pad_{name}"] = torch.from_numpy(np.arange(-r, inputs + r) % inputs)
            steps = np.diff(centres)
            if len(steps) == 0 or (steps == steps[0]).all():
                starts.append([int(centres[0]), int(steps[0]) if len(steps) else 1])
        return plan, (tuple(starts) if len(starts) == 2 else None)

    def _work(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A work tensor kept between steps (its contents are whatever the last user left)."""
        t = self._workspace.get(name)
        if t is None or t.shape != shape or t.dtype != dtype or t.device != self.device:
            t = self._workspace[name] = torch.empty(shape, dtype=dtype, device=self.device)
        return t

    def _input_windows(self, x: torch.Tensor, per_instance: bool) -> torch.Tensor:
        """(side, side, H, W, instances or 1) in the permanences' dtype, 0/1: the input bit
        under slot (a, b) of every cell, as a view of the padded input where the cell centres
        are evenly spaced (no copy of the window-sized tensor), else gathered."""
        cfg = self.config
        (h, w), (hin, win) = cfg.cell_shape, cfg.input_shape
        r, side = cfg.potential_radius, cfg.window_side
        if not per_instance:
            # one input for all instances: (window x cells) bits, gathered in one operation
            return x.reshape(-1).view(torch.uint8).index_select(0, self.input_flat_index) \
                .view(side, side, h, w, 1)
        # (instances, inputs) to (inputs, instances): a plain transposing copy of bytes (bools
        # viewed as bytes) into a contiguous tensor, several times faster than one into the
        # padded input's strided interior
        grid = self._work("input-by-position", (hin, win, self.instances), torch.uint8)
        grid.view(hin * win, self.instances).copy_(
            x.reshape(self.instances, hin * win).view(torch.uint8).T)
        if cfg.edge == "clip" or r <= min(hin, win):
            padded = self._pad(grid, r, 0 if cfg.edge == "clip" else None, "input",
                               self.perm_dtype)
        else:
            # a radius wider than the input wraps more than once: gathered
            padded = grid.to(self.perm_dtype).index_select(0, self.pad_rows) \
                .index_select(1, self.pad_cols)
        if self.window_starts is not None:
            (r0, sr), (c0, sc) = self.window_starts
            hs, ws, _ = padded.stride()
            return padded.as_strided((side, side, h, w, padded.shape[-1]),
                                     (hs, ws, sr * hs, sc * ws, 1),
                                     padded.storage_offset() + r0 * hs + c0 * ws)
        windows = padded.index_select(0, self.window_rows).index_select(1, self.window_cols)
        return windows.view(side, h, side, w, -1).permute(0, 2, 1, 3, 4)

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

    def _pad(self, grid: torch.Tensor, r: int, absent: int | None, name: str,
             dtype: torch.dtype) -> torch.Tensor:
        """grid (..., A, B, I) with a border of r around (A, B), in the work tensor `name` of
        `dtype`: the opposite edge (absent None, 'wrap'; r <= A, B) or `absent` ('clip').
        Slice copies (a gather costs several times more)."""
        a, b = grid.shape[-3], grid.shape[-2]
        shape = tuple(grid.shape[:-3]) + (a + 2 * r, b + 2 * r, grid.shape[-1])
        padded = self._work(name, shape, dtype)
        padded[..., r:r + a, r:r + b, :].copy_(grid)
        if absent is None:
            padded[..., :r, r:r + b, :].copy_(grid[..., a - r:, :, :])
            padded[..., r + a:, r:r + b, :].copy_(grid[..., :r, :, :])
            padded[..., :, :r, :].copy_(padded[..., :, b:b + r, :])
            padded[..., :, r + b:, :].copy_(padded[..., :, r:2 * r, :])
        else:
            for border in (padded[..., :r, :, :], padded[..., r + a:, :, :],
                           padded[..., r:r + a, :r, :], padded[..., r:r + a, r + b:, :]):
                border.fill_(absent)
        return padded

    def _padded(self, grid: torch.Tensor, absent: int) -> torch.Tensor:
        """grid (..., H, W, I) with a one-cell border around (H, W): the opposite edge
        ('wrap') or `absent` ('clip')."""
        return self._pad(grid, 1, None if self.config.edge == "wrap" else absent,
                         f"grid{absent}-{grid.dtype}", grid.dtype)

    def _neighbourhoods(self, grid: torch.Tensor) -> torch.Tensor:
        """(..., 9, H, W, I): what each cell of a small grid (..., H, W, I) reads from the cells
        of its 3x3 neighbourhood (itself at index 4; itself again in place of a neighbour
        beyond a clipped border), in one gather: the software form of the neighbour register."""
        (h, w), n = self.config.cell_shape, self.config.num_cells
        lead, i = tuple(grid.shape[:-3]), grid.shape[-1]
        if i == 1 and not lead:
            values = grid.reshape(-1).index_select(0, self.neighbourhood_index)
        else:
            values = grid.reshape(-1, n, i).index_select(1, self.neighbourhood_index)
        return values.view(lead + (9, h, w, i))

    def _box(self, grid: torch.Tensor, op: str) -> torch.Tensor:
        """The sum (op "sum") or maximum ("amax") over each 3x3 neighbourhood including the
        cell, for non-negative grid (..., H, W, I); absent neighbours count as 0. A small grid:
        one reduction over the gathered neighbourhoods (fewest operations; a clipped border's
        stand-ins, copies of the cell, taken back out of a sum); a large one: two separable
        passes over shifted views of the padded grid, rows then columns (least memory
        traffic)."""
        if grid.numel() < self.small_grid:
            values = self._neighbourhoods(grid)
            if op == "amax":
                return values.amax(-4)
            total = values.sum(-4, dtype=grid.dtype)
            return total if self.config.edge == "wrap" else \
                total.sub_(self.absent_count * grid)
        fold = torch.add if op == "sum" else torch.maximum
        p = self._padded(grid, 0)
        rows = fold(fold(p[..., :-2, :, :], p[..., 1:-1, :, :]), p[..., 2:, :, :])
        return fold(fold(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])

    def _inhibit(self, boosted: torch.Tensor) -> torch.Tensor:
        """k-winners local inhibition of boosted (..., H, W, I): active cells, bool.
        Keys boosted * cells + (cells - 1 - raster index) are distinct, and a neighbour beats a
        cell exactly when its key is larger (SPEC.md section 5, tie-break by index)."""
        key = torch.add(self.tie, boosted.to(self.key_dtype), alpha=self.config.num_cells)
        if key.numel() < self.small_grid:
            # the cell itself, at the centre, never beats itself
            beaten_by = (self._neighbourhoods(key) > key.unsqueeze(-4)).sum(-4, dtype=torch.int8)
        else:
            # one comparison a neighbour, counted in place
            h, w = self.config.cell_shape
            padded = self._padded(key, -1)
            beaten_by = torch.zeros(key.shape, dtype=torch.uint8, device=key.device)
            beats = self._work("beats", tuple(key.shape), torch.bool)
            for dy, dx in NEIGHBOUR_OFFSETS:
                torch.gt(padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w, :], key, out=beats)
                beaten_by.add_(beats.view(torch.uint8))   # bools as bytes: no conversion
        return (boosted > 0) & (beaten_by < self.config.winners)

    @torch.inference_mode()
    def exchange(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's three reads of the neighbours (SPEC.md section 10) on the present state:
        inhibition over the last step's boosted overlaps, the 3x3 sum of the active duties and
        the 3x3 maximum of the overlap duties, each (H, W, instances). What `cellsp bench
        torch` times as the exchange's cost."""
        return (self._inhibit(self.last["boosted"]),
                self._box(self.active_duty.to(self.duty_dtype), "sum"),
                self._box(self.overlap_duty.to(self.duty_dtype), "amax"))

    def _boosted(self, overlap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(overlap after the stimulus threshold, (overlap * boost) >> boost_frac_bits); the
        boost is broadcast over any leading batch axis."""
        if self.config.stimulus_threshold > 0:
            overlap = overlap * (overlap >= self.config.stimulus_threshold)
        return overlap, (overlap * self.boost) >> self.config.boost_frac_bits

    # ------------------------------------------------------------------ steps

    def step(self, x, *, learn: bool) -> torch.Tensor:
        """One input, (Hin, Win) for every instance or (instances, Hin, Win): returns the
        (instances, H, W) bool map of active cells; learns when `learn` (keyword, required)."""
        x, per_instance = self._checked(x, batch=False)
        h, w = self.config.cell_shape
        out = torch.empty((self.instances, h, w), dtype=torch.bool, device=self.device)
        self._instances_first(self._step(x, per_instance, bool(learn)), out)
        return out   # made outside inference mode: an ordinary tensor, usable with autograd

    def _instances_first(self, active: torch.Tensor, out: torch.Tensor) -> None:
        """Copy active cells (H, W, instances) into out (instances, H, W): a transposing copy
        of bytes between two 2-D views (several times faster than a permuted bool copy)."""
        n = self.config.num_cells
        out.view(torch.uint8).view(self.instances, n).copy_(
            active.view(torch.uint8).view(n, self.instances).T)

    @torch.inference_mode()
    def _step(self, x: torch.Tensor, per_instance: bool, learn: bool) -> torch.Tensor:
        """One checked input; returns the active cells (H, W, instances)."""
        cfg = self.config
        windows = self._input_windows(x, per_instance)
        if learn and self.fused is not None:
            overlap_add, grid_step, permanence_update = self.fused
            slots = self._slots(windows, always=True)
            total = torch.zeros(tuple(self.active_duty.shape), device=self.device,
                                dtype=self.overlap_dtype)
            for perm, bits, _ in slots:
                overlap_add(total, perm, bits, self.rules)
            overlap, boosted, active, weak, flags = grid_step(
                total, self.boost, self.active_duty,
                self.overlap_duty, self.tie, self.neighbourhood_size, self.boost_lookup_offset,
                self.boost_by_difference, self.boost_offset, self.boost_divisor, self.table,
                self.rules, self.duty_dtype, self.key_dtype)
            for perm, bits, cap in slots:
                permanence_update(perm, bits, cap, flags, self.rules)
            active = active.view(torch.bool)
            self.last = {"overlap": overlap, "boosted": boosted, "active": active,
                         "weak": weak.view(torch.bool)}
            return active
        overlap = self._overlap(windows)
        overlap, boosted = self._boosted(overlap)
        active = self._inhibit(boosted)
        self.last = {"overlap": overlap, "boosted": boosted, "active": active}
        if learn:
            self._update_duty(active, overlap > 0)
            self._update_boost()
            self._update_permanences(windows, active, self._weak())
        return active

    def _slots(self, windows: torch.Tensor, always: bool = False):
        """(permanences, input bits, cap) over the synapses, in the pieces a step works on:
        the whole (side, side, H, W, I) tensors for a small array (fewest operations), else
        one window slot (H, W, I) at a time (or always, when `always`), so that the step's
        work tensors stay in the cache and only the permanences and caps travel from
        memory."""
        cfg = self.config
        side = cfg.window_side
        shape = (side, side) + tuple(self.active_duty.shape)
        perm, cap = self.permanences.view(shape), self.cap.view(shape)
        if cfg.num_cells * self.instances < self.slot_loop and not always:
            return [(perm, windows, cap)]
        return [(perm[a, b], windows[a, b], cap[a, b]) for a in range(side)
                for b in range(side)]

    def _overlap(self, windows: torch.Tensor) -> torch.Tensor:
        """Connected synapses on active input bits, per cell (H, W, instances) int32:
        connected (a shift for a power-of-two threshold, else a clamp to [T - 1, T] less
        T - 1), AND the input windows, summed over the window (as bytes where they fit)."""
        shift, t = self.rules.connected_shift, self.rules.connected_threshold
        grid = tuple(self.active_duty.shape)
        pieces = self._slots(windows)
        overlap = None
        for perm, bits, _ in pieces:
            connected = self._work("connected", tuple(perm.shape), self.perm_dtype)
            if shift >= 0:
                torch.bitwise_right_shift(perm, shift, out=connected)
            else:
                torch.clamp(perm, t - 1, t, out=connected).sub_(t - 1)
            torch.bitwise_and(connected, bits, out=connected)
            if len(pieces) == 1:
                return connected.view((-1,) + grid).sum(0, dtype=torch.int32)
            if overlap is None:
                overlap = connected.to(self.overlap_dtype, copy=True)   # not the work tensor
            else:
                overlap.add_(connected)
        return overlap.to(torch.int32)

    def _update_duty(self, active: torch.Tensor, overlapped: torch.Tensor) -> None:
        """duty <- duty - (duty >> period_log2) + hit * 2**(duty_bits - period_log2)."""
        r = self.rules
        for duty, hit in ((self.active_duty, active), (self.overlap_duty, overlapped)):
            duty.sub_(duty >> r.duty_period_log2).add_(hit.view(torch.uint8), alpha=r.duty_unit)

    def _update_boost(self) -> None:
        """Boost from the rounded difference between the neighbourhood's mean active duty and
        the cell's own (SPEC.md section 8, no division by the neighbourhood size):
        table[clamp(floor((diff * 2**(q+1) + m * 2**D) / (m * 2**(D+1))), -2**q, 2**q) + 2**q]
        with the table offset 2**q folded into the numerator."""
        q = self.config.boost_index_bits
        duty = self.active_duty.to(self.duty_dtype)
        if self.boost_by_difference.numel():
            index = torch.addcmul(self.boost_lookup_offset, self.neighbourhood_size, duty,
                                  value=-1).add_(self._box(duty, "sum"))
            torch.index_select(self.boost_by_difference, 0, index.view(-1),
                               out=self.boost.view(-1))
            return
        diff = self._box(duty, "sum").sub_(self.neighbourhood_size * duty)
        index = torch.div(torch.add(self.boost_offset, diff, alpha=2 << q), self.boost_divisor,
                          rounding_mode="floor").clamp_(0, 2 << q)
        torch.index_select(self.table, 0, index.view(-1), out=self.boost.view(-1))

    def _weak(self) -> torch.Tensor:
        """Cells whose overlap duty is below the fraction of their neighbourhood's largest."""
        duty = self.overlap_duty.to(self.duty_dtype)
        largest = self._box(duty, "amax")
        weak = (duty << MIN_DUTY_FRAC_BITS) < largest.mul_(self.config.min_overlap_duty_q)
        self.last["weak"] = weak
        return weak

    def _update_permanences(self, windows: torch.Tensor, active: torch.Tensor,
                            weak: torch.Tensor) -> None:
        """Learning of active cells, then the bump of weak cells, in place, in passes over the
        synapses that never leave [0, Pmax] (or wrap back into it, in uint8):
        learning is clamp(perm, lo, hi) + delta, with (lo, hi, delta) = (0, Pmax - inc, +inc)
        on an active cell's slot over an active input bit, (dec, Pmax, -dec) over an inactive
        one, (0, Pmax, 0) on other cells: max(perm - dec, 0) and min(perm + inc, Pmax). The
        bump is min(perm, Pmax - b) + b, b = perm_bump on weak cells (skipped when no cell is
        weak). Last, min(perm, cap): slots outside the pool (cap 0) back to 0."""
        cfg = self.config
        dtype = self.perm_dtype
        # per cell: dec, -dec, -inc, inc + dec on active cells, 0 elsewhere (one operation)
        dec, neg_dec, neg_inc, inc_dec = torch.mul(active, self.learning_amounts)
        bump = top = None
        if cfg.perm_bump and bool(weak.any()):
            bump = weak.to(dtype) * cfg.perm_bump
            top = self.perm_top - bump
        for perm, bits, cap in self._slots(windows):
            lo, hi, delta = (self._work(name, tuple(perm.shape), dtype)
                             for name in ("lo", "hi", "delta"))
            torch.addcmul(dec, bits, neg_dec, out=lo)
            torch.addcmul(self.perm_top, bits, neg_inc, out=hi)
            torch.addcmul(neg_dec, bits, inc_dec, out=delta)
            torch.clamp(perm, min=lo, max=hi, out=perm).add_(delta)
            if bump is not None:
                torch.minimum(perm, top, out=perm).add_(bump)
            torch.minimum(perm, cap, out=perm)

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
                    self._instances_first(self._step(X[k], per_instance, True), out[k])
                    if progress:
                        progress(1)
            else:
                out[start:stop] = self._infer(X[start:stop], per_instance, progress)
        return out

    def infer(self, X, progress=None) -> torch.Tensor:
        """Active maps (T, instances, H, W) for a batch without learning; no state changes."""
        X, per_instance = self._checked(X, batch=True)
        return self._infer(X, per_instance, progress).clone()   # an ordinary tensor

    @torch.inference_mode()
    def _infer(self, X: torch.Tensor, per_instance: bool, progress) -> torch.Tensor:
        cfg = self.config
        t, i = X.shape[0], self.instances
        (h, w), n, window = cfg.cell_shape, cfg.num_cells, cfg.window_size
        overlap = torch.empty((t, n, i), dtype=torch.int32, device=self.device)
        perm = self.permanences.view(window, n, i)
        if per_instance:
            for k in range(t):
                overlap[k] = self._overlap(self._input_windows(X[k], True)).view(n, i)
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
