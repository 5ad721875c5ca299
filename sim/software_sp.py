"""The classic floating-point HTM spatial pooler, as known from NuPIC and htm.core.

`SoftwareSP` is written from the published algorithm (Numenta's BAMI chapter "Spatial Pooling
Algorithm") and the documented behaviour of htm.core's ``SpatialPooler``; it is the baseline the
cellular array is compared against. Parameter names are htm.core's, in snake_case.
`SoftwareSP.from_config` builds the classic SP closest to a cellular `SPConfig`, starting from
the golden model's potential pools and initial permanences.

`HtmCoreSP` offers the same ``compute``/``run`` interface on top of htm.core itself, when that
package is installed.

Design choices (where the classic descriptions leave room or differ from each other):

* Stimulus threshold: as in BAMI, a raw overlap below ``stimulus_threshold`` counts as 0 and
  only then is multiplied by the boost factor; a column needs a (thresholded) overlap > 0 to
  become active. Boosting applies with and without learning (htm.core behaviour).
* Ties in inhibition: columns are ranked by boosted overlap, equal values by raster index with
  the lower index ranking higher. Global inhibition keeps the ``k`` best ranks; in local
  inhibition a column is "beaten" by a neighbour of better rank. (htm.core instead lets a tied
  neighbour win only if it was already selected in its sequential scan; a pure rank order is
  deterministic, vectorisable and is the rule the cellular golden model uses.)
* Local inhibition: a column wins when fewer than ``round(density * n)`` of the columns in its
  ``(2R+1)^2`` neighbourhood (``n`` columns, itself included, fewer at a clipped border) beat it.
* Inhibition radius (adaptive, ``inhibition_radius=None``): htm.core's rule,
  ``R = round(max(1, (span * columns_per_input - 1) / 2))`` with ``span`` the connected span
  averaged over axes and columns and ``columns_per_input`` the mean of the per-axis ratios.
  With ``wrap_around`` the span along an axis is the shortest circular arc that covers the
  connected inputs (htm.core measures it without wrapping, so a pool straddling the input edge
  would count as spanning the whole input).
* Boost: ``exp(boost_strength * (target - active_duty))`` every learning step, target = mean
  active duty over the column's inhibition neighbourhood (itself included) with local
  inhibition, the desired density with global inhibition.
* Duty cycles: moving averages ``(d * (p - 1) + v) / p`` with ``p = min(duty_cycle_period,
  iteration)``; the overlap duty counts steps with a thresholded overlap > 0.
* ``iteration`` counts learning steps only: ``compute(x, learn=False)`` changes no state at all
  (htm.core also counts inference calls).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from .config import SPConfig
from .inputs import check_binary
from .layout import initial_permanences, layout

__all__ = ["SoftwareSP", "HtmCoreSP"]

# A synapse counts as connected at permanence >= connected - _EPSILON (htm.core does the same),
# so float rounding in repeated increments cannot disconnect a synapse that sits on the threshold.
_EPSILON = 1e-6
# Dense (inputs x columns) float32 weights are used for batched inference up to this size.
_DENSE_LIMIT = 1 << 24
# Batched inference handles about this many (input, column) pairs at a time.
_CHUNK_PAIRS = 1 << 21
# htm.core's default density when neither sparsity parameter is given.
_DEFAULT_DENSITY = 0.02
# from_config takes the pools from the golden model, so these must stay as the config says.
_GEOMETRY = ("input_dimensions", "column_dimensions", "potential_radius", "potential_pct",
             "wrap_around")


# ---------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Params:
    """Validated parameters; `density`/`num_active` hold the one sparsity setting in use."""

    input_dimensions: tuple[int, int]
    column_dimensions: tuple[int, int]
    potential_radius: int
    potential_pct: float
    global_inhibition: bool
    local_area_density: float
    num_active_columns_per_inh_area: int
    stimulus_threshold: int
    syn_perm_inactive_dec: float
    syn_perm_active_inc: float
    syn_perm_connected: float
    syn_perm_below_stimulus_inc: float
    min_pct_overlap_duty_cycles: float
    duty_cycle_period: int
    boost_strength: float
    seed: int
    wrap_around: bool
    update_period: int
    inhibition_radius: int | None


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _need_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if not _is_int(value):
        raise ValueError(f"{name}: expected an integer >= {lo}, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        top = "" if hi is None else f", <= {hi}"
        raise ValueError(f"{name} = {value}: must be >= {lo}{top}")
    return value


def _need_fraction(name: str, value, lo_open: bool = False) -> float:
    span = "(0, 1]" if lo_open else "[0, 1]"
    if not _is_number(value):
        raise ValueError(f"{name}: expected a number in {span}, got {value!r}")
    value = float(value)
    if not (0.0 <= value <= 1.0) or (lo_open and value == 0.0):
        raise ValueError(f"{name} = {value}: must lie in {span}")
    return value


def _need_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _need_shape(name: str, value) -> tuple[int, int]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(_is_int(v) for v in value)):
        raise ValueError(f"{name}: expected two integers (rows, columns), got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} = {tuple(value)}: both sides must be >= 1")
    return int(value[0]), int(value[1])


def _resolve(input_dimensions=(32, 32), column_dimensions=(64, 64), potential_radius=16,
             potential_pct=0.5, global_inhibition=False, local_area_density=None,
             num_active_columns_per_inh_area=None, stimulus_threshold=0,
             syn_perm_inactive_dec=0.01, syn_perm_active_inc=0.1, syn_perm_connected=0.1,
             min_pct_overlap_duty_cycles=0.001, duty_cycle_period=1000, boost_strength=0.0,
             seed=1, wrap_around=True, syn_perm_below_stimulus_inc=None, update_period=50,
             inhibition_radius=None) -> _Params:
    """Check every parameter (defaults are htm.core's) and return them resolved."""
    inputs = _need_shape("input_dimensions", input_dimensions)
    columns = _need_shape("column_dimensions", column_dimensions)
    n_columns = columns[0] * columns[1]

    # htm.core's convention: a sparsity setting <= 0 (or here None) is "not used".
    if local_area_density is not None and not _is_number(local_area_density):
        raise ValueError(f"local_area_density: expected a number in (0, 1] or None, "
                         f"got {local_area_density!r}")
    if num_active_columns_per_inh_area is not None and not _is_int(num_active_columns_per_inh_area):
        raise ValueError(f"num_active_columns_per_inh_area: expected a positive integer or "
                         f"None, got {num_active_columns_per_inh_area!r}")
    density_set = local_area_density is not None and local_area_density > 0
    count_set = num_active_columns_per_inh_area is not None and num_active_columns_per_inh_area > 0
    if density_set and count_set:
        raise ValueError(f"local_area_density = {local_area_density} and "
                         f"num_active_columns_per_inh_area = {num_active_columns_per_inh_area}: "
                         f"give exactly one of them a value > 0")
    if not density_set and not count_set:
        if local_area_density is None and num_active_columns_per_inh_area is None:
            local_area_density, density_set = _DEFAULT_DENSITY, True
        else:
            raise ValueError("local_area_density and num_active_columns_per_inh_area are both "
                             "<= 0: give exactly one of them a value > 0")
    density = _need_fraction("local_area_density", local_area_density) if density_set else 0.0
    count = int(num_active_columns_per_inh_area) if count_set else 0
    glob = _need_bool("global_inhibition", global_inhibition)
    if glob:
        if density_set and _global_k(density, n_columns) < 1:
            raise ValueError(f"local_area_density = {density}: with {n_columns} columns global "
                             f"inhibition would select no column; raise it to at least "
                             f"{1 / n_columns:.6g}")
        if count > n_columns:
            raise ValueError(f"num_active_columns_per_inh_area = {count} exceeds the "
                             f"{n_columns} columns")

    connected = _need_fraction("syn_perm_connected", syn_perm_connected)
    if syn_perm_below_stimulus_inc is None:
        syn_perm_below_stimulus_inc = connected / 10
    if inhibition_radius is not None:
        inhibition_radius = _need_int("inhibition_radius", inhibition_radius, 1)
        if glob:
            raise ValueError("inhibition_radius: only used with local inhibition; leave it None "
                             "when global_inhibition is True")
    if not _is_number(boost_strength) or not math.isfinite(boost_strength) or boost_strength < 0:
        raise ValueError(f"boost_strength: expected a finite number >= 0, got {boost_strength!r}")
    return _Params(
        input_dimensions=inputs,
        column_dimensions=columns,
        potential_radius=_need_int("potential_radius", potential_radius, 0),
        potential_pct=_need_fraction("potential_pct", potential_pct, lo_open=True),
        global_inhibition=glob,
        local_area_density=density,
        num_active_columns_per_inh_area=count,
        stimulus_threshold=_need_int("stimulus_threshold", stimulus_threshold, 0),
        syn_perm_inactive_dec=_need_fraction("syn_perm_inactive_dec", syn_perm_inactive_dec),
        syn_perm_active_inc=_need_fraction("syn_perm_active_inc", syn_perm_active_inc),
        syn_perm_connected=connected,
        syn_perm_below_stimulus_inc=_need_fraction("syn_perm_below_stimulus_inc",
                                                   syn_perm_below_stimulus_inc),
        min_pct_overlap_duty_cycles=_need_fraction("min_pct_overlap_duty_cycles",
                                                   min_pct_overlap_duty_cycles),
        duty_cycle_period=_need_int("duty_cycle_period", duty_cycle_period, 1),
        boost_strength=float(boost_strength),
        seed=_need_int("seed", seed, 0),
        wrap_around=_need_bool("wrap_around", wrap_around),
        update_period=_need_int("update_period", update_period, 1),
        inhibition_radius=inhibition_radius,
    )


def _global_k(density: float, n_columns: int) -> int:
    """Winners of global inhibition: floor(density * columns), as htm.core (guarding float noise)."""
    return int(math.floor(density * n_columns + 1e-9))


# ---------------------------------------------------------------------- geometry


def _centres(n_columns: int, n_inputs: int) -> np.ndarray:
    """Input coordinate each column maps to along one axis: floor((i + 0.5) * inputs / columns)."""
    i = np.arange(n_columns, dtype=np.int64)
    return ((2 * i + 1) * n_inputs) // (2 * n_columns)


def _axis_window(n_columns: int, n_inputs: int, radius: int, wrap: bool):
    """Per column, the input positions of its potential window along one axis.

    Returns (start (columns,), length L, positions (columns, L), valid (columns, L)). Position t
    of a window is start + t (mod n_inputs with wrap); with wrap a window never holds the same
    input twice, and with clip it keeps only in-range positions (valid marks them).
    """
    centre = _centres(n_columns, n_inputs)
    length = min(2 * radius + 1, n_inputs)
    t = np.arange(length)
    if wrap:
        start = (centre - radius) % n_inputs
        pos = (start[:, None] + t[None, :]) % n_inputs
        valid = np.ones(pos.shape, bool)
    else:
        start = np.maximum(centre - radius, 0)
        stop = np.minimum(centre + radius, n_inputs - 1)
        pos = start[:, None] + t[None, :]
        valid = pos <= stop[:, None]
        pos = np.where(valid, pos, 0)
    return start, length, pos, valid


def _axis_offsets(radius: int, size: int, wrap: bool) -> np.ndarray:
    """Neighbour offsets -radius..radius along an axis of `size` columns, each neighbour once."""
    if wrap:
        if 2 * radius + 1 >= size:
            # the whole ring: keep one offset per residue, the shortest ones
            return np.arange(-(size // 2), size - size // 2)
        return np.arange(-radius, radius + 1)
    r = min(radius, size - 1)
    return np.arange(-r, r + 1)


class _Neighbourhood:
    """The (2R+1) x (2R+1) neighbourhood of every column, as shifted views of a padded grid.

    Each column's neighbours are reached by one array shift per offset, so an operation over
    the neighbourhood costs (2R+1)^2 vectorised passes over all columns (and inputs); sums and
    maxima over the square are separable and cost 2 * (2R+1) passes.
    """

    def __init__(self, shape: tuple[int, int], radius: int, wrap: bool):
        self.shape = shape
        self.radius = radius
        self.wrap = wrap
        self._axis_offsets = (_axis_offsets(radius, shape[0], wrap),
                              _axis_offsets(radius, shape[1], wrap))
        oy, ox = self._axis_offsets
        self.offsets = [(int(dy), int(dx)) for dy in oy for dx in ox if (dy, dx) != (0, 0)]
        self.pad = (int(np.abs(oy).max()), int(np.abs(ox).max()))
        # wrap padding as one gather per axis
        self._wrap_rows = np.arange(-self.pad[0], shape[0] + self.pad[0]) % shape[0]
        self._wrap_cols = np.arange(-self.pad[1], shape[1] + self.pad[1]) % shape[1]
        #: (H, W) columns in each neighbourhood, the column itself included
        self.size = self.box(np.ones(shape, np.int64), np.add, 0).astype(np.int64)
        index = np.arange(shape[0] * shape[1]).reshape(shape)
        #: per offset, (H, W): the neighbour there has a lower raster index (wins a tie)
        self.lower = [view < index for view in self.views(index, index.size)]

    def _padded(self, grid: np.ndarray, fill, axes=(True, True)) -> np.ndarray:
        py, px = (self.pad[0] if axes[0] else 0), (self.pad[1] if axes[1] else 0)
        if self.wrap:
            if py:
                grid = np.take(grid, self._wrap_rows, axis=-2)
            if px:
                grid = np.take(grid, self._wrap_cols, axis=-1)
            return grid
        h, w = grid.shape[-2:]
        out = np.full(grid.shape[:-2] + (h + 2 * py, w + 2 * px), fill, grid.dtype)
        out[..., py:py + h, px:px + w] = grid
        return out

    def views(self, grid: np.ndarray, fill):
        """Yield, per offset, the neighbour value of every column of grid (..., H, W).

        Beyond a clipped border the neighbour value is `fill`.
        """
        h, w = self.shape
        py, px = self.pad
        padded = self._padded(grid, fill)
        for dy, dx in self.offsets:
            yield padded[..., py + dy:py + dy + h, px + dx:px + dx + w]

    def box(self, grid: np.ndarray, op: np.ufunc, fill) -> np.ndarray:
        """Reduce grid (H, W) over each neighbourhood with ufunc `op` (np.add or np.maximum).

        Done one axis at a time; `fill` is op's identity, used beyond a clipped border.
        """
        grid = np.asarray(grid, np.float64)
        h, w = self.shape
        padded = self._padded(grid, fill, (True, False))
        py = self.pad[0]
        out = np.full(grid.shape, fill, np.float64)
        for dy in self._axis_offsets[0]:
            op(out, padded[py + dy:py + dy + h], out=out)
        padded = self._padded(out, fill, (False, True))
        px = self.pad[1]
        out = np.full(grid.shape, fill, np.float64)
        for dx in self._axis_offsets[1]:
            op(out, padded[:, px + dx:px + dx + w], out=out)
        return out

    def mean(self, grid: np.ndarray) -> np.ndarray:
        """Mean of grid (H, W) over each column's neighbourhood, the column itself included."""
        return self.box(grid, np.add, 0.0) / self.size

    def max(self, grid: np.ndarray) -> np.ndarray:
        """Largest value of grid (H, W) in each column's neighbourhood."""
        return self.box(grid, np.maximum, -np.inf)


# ---------------------------------------------------------------------- the classic SP


class SoftwareSP:
    """Classic floating-point HTM spatial pooler (BAMI / htm.core behaviour, NumPy).

    Construct with htm.core's parameters in snake_case (all optional; defaults are htm.core's):
    ``input_dimensions``, ``column_dimensions`` (2D), ``potential_radius``, ``potential_pct``,
    ``global_inhibition``, ``local_area_density`` or ``num_active_columns_per_inh_area`` (exactly
    one > 0; neither given means density 0.02), ``stimulus_threshold``,
    ``syn_perm_inactive_dec``, ``syn_perm_active_inc``, ``syn_perm_connected``,
    ``min_pct_overlap_duty_cycles``, ``duty_cycle_period``, ``boost_strength``, ``seed``,
    ``wrap_around``, ``syn_perm_below_stimulus_inc`` (default connected / 10),
    ``update_period`` (steps between recomputing the inhibition radius and the minimum overlap
    duty cycles, default 50) and ``inhibition_radius`` (None = adaptive, an int fixes it).
    Invalid values raise ValueError naming the parameter.

    ``compute(x, learn=...)`` maps one binary input to the bool map of active columns;
    ``run(X, learn=...)`` processes a batch (`learn` keyword-only and required, as in
    `GoldenModel` and the host `Driver`). See the module docstring for the rules where implementations differ.

    Internally each column keeps one synapse slot per position of its potential window
    (``(2r+1)^2`` at most); the properties expand them to dense (columns, inputs) matrices.
    """

    def __init__(self, **params: Any):
        p = _resolve(**params)
        self._p = p
        self.input_dimensions: tuple[int, int] = p.input_dimensions
        self.column_dimensions: tuple[int, int] = p.column_dimensions
        self.num_inputs = p.input_dimensions[0] * p.input_dimensions[1]
        self.num_columns = n = p.column_dimensions[0] * p.column_dimensions[1]
        rng = np.random.default_rng(p.seed)

        h, w = p.column_dimensions
        hin, win = p.input_dimensions
        r = p.potential_radius
        self._row_start, self._la, rows, rows_ok = _axis_window(h, hin, r, p.wrap_around)
        self._col_start, self._lb, cols, cols_ok = _axis_window(w, win, r, p.wrap_around)
        s = self._la * self._lb
        # slot a * Lb + b of column i * W + j reads input (rows[i, a], cols[j, b])
        self._input_index = (rows[:, None, :, None] * win
                             + cols[None, :, None, :]).reshape(n, s)
        self._in_range = (rows_ok[:, None, :, None] & cols_ok[None, :, None, :]).reshape(n, s)

        # potential pool: round(pct * in-range slots) of the in-range slots, chosen at random
        keys = np.where(self._in_range, rng.random((n, s)), np.inf)
        rank = np.empty((n, s), np.int64)
        np.put_along_axis(rank, np.argsort(keys, axis=1, kind="stable"),
                          np.broadcast_to(np.arange(s), (n, s)), axis=1)
        pool = np.floor(self._in_range.sum(1) * p.potential_pct + 0.5).astype(np.int64)
        self._potential = (rank < pool[:, None]) & self._in_range

        # htm.core's initialisation: half the pool connected, uniform in [connected, 1],
        # the rest uniform in [0, connected)
        c = p.syn_perm_connected
        starts_connected = rng.random((n, s)) < 0.5
        u = rng.random((n, s))
        perm = np.where(starts_connected, c + (1.0 - c) * u, c * u)
        self._perm = np.where(self._potential, perm, 0.0)
        self._raise_to_threshold(np.arange(n))

        self._active_duty = np.zeros(n)
        self._overlap_duty = np.zeros(n)
        self._min_overlap_duty = np.zeros(n)
        self._boost = np.ones(n)
        self._iteration = 0
        self._k_global = (p.num_active_columns_per_inh_area if p.num_active_columns_per_inh_area
                          else _global_k(p.local_area_density, n))
        self._radius = -1
        self._nbhd: _Neighbourhood | None = None
        self._num_active_local: np.ndarray | None = None
        if p.inhibition_radius is not None:
            self._set_radius(p.inhibition_radius)
        else:
            self._update_inhibition_radius()

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_config(cls, config, **overrides: Any) -> "SoftwareSP":
        """The classic SP closest to the cellular `SPConfig` `config`, for a fair comparison.

        Same input and column dimensions, potential radius and edge (wrap_around = edge ==
        "wrap"); local inhibition with a fixed ``inhibition_radius=1`` (the 3x3 neighbourhood of
        a cell) and ``local_area_density = winners / 9``; the config's stimulus threshold, boost
        strength, minimum overlap duty fraction and seed; duty_cycle_period = 2**duty_period_log2;
        permanences and their steps divided by ``perm_max`` (so connected = connected_threshold /
        perm_max, syn_perm_below_stimulus_inc = perm_bump / perm_max); update_period = 1, since the
        array re-evaluates weak cells every step. The potential pools and
        the initial permanences are the golden model's (`cellsp.sim.layout`), scaled to floats,
        so both start from the same synapses. Other parameters keep SoftwareSP's defaults.

        `overrides` replace any parameter except the pool geometry (input_dimensions,
        column_dimensions, potential_radius, potential_pct, wrap_around), which must match the
        golden pools.
        """
        if not isinstance(config, SPConfig):
            raise ValueError(f"config: expected an SPConfig, got {type(config).__name__}")
        fixed = sorted(set(overrides) & set(_GEOMETRY))
        if fixed:
            raise ValueError(f"from_config: {fixed} cannot be overridden, the potential pools "
                             f"come from the config")
        pm = config.perm_max
        params: dict[str, Any] = dict(
            input_dimensions=tuple(config.input_shape),
            column_dimensions=tuple(config.cell_shape),
            potential_radius=config.potential_radius,
            potential_pct=config.potential_pct,
            wrap_around=config.edge == "wrap",
            global_inhibition=False,
            inhibition_radius=1,
            local_area_density=config.winners / 9,
            num_active_columns_per_inh_area=None,
            stimulus_threshold=config.stimulus_threshold,
            syn_perm_connected=config.connected_threshold / pm,
            syn_perm_active_inc=config.perm_inc / pm,
            syn_perm_inactive_dec=config.perm_dec / pm,
            syn_perm_below_stimulus_inc=config.perm_bump / pm,
            duty_cycle_period=2 ** config.duty_period_log2,
            boost_strength=config.boost_strength,
            min_pct_overlap_duty_cycles=config.min_overlap_duty_pct,
            seed=config.seed,
            # the cellular array re-evaluates weak cells after every learning step
            update_period=1,
        )
        # switching the kind of inhibition or sparsity drops the setting that no longer applies
        if overrides.get("global_inhibition") and "inhibition_radius" not in overrides:
            params["inhibition_radius"] = None
        if "num_active_columns_per_inh_area" in overrides and "local_area_density" not in overrides:
            params["local_area_density"] = None
        params.update(overrides)
        sp = cls(**params)

        lay = layout(config)
        perm = initial_permanences(config, lay.potential)
        cell, slot = np.nonzero(lay.potential)
        sp._set_synapses(cell, lay.input_index[cell, slot], perm[cell, slot] / pm)
        return sp

    def _set_synapses(self, column: np.ndarray, inp: np.ndarray, perm: np.ndarray) -> None:
        """Replace all potential pools by the synapses (column, flat input, permanence)."""
        p = self._p
        hin, win = p.input_dimensions
        w = p.column_dimensions[1]
        i, j = np.divmod(column, w)
        r_in, c_in = np.divmod(inp, win)
        ta = r_in - self._row_start[i]
        tb = c_in - self._col_start[j]
        if p.wrap_around:
            ta %= hin
            tb %= win
        slot = ta * self._lb + tb
        ok = (ta >= 0) & (ta < self._la) & (tb >= 0) & (tb < self._lb)
        ok[ok] = self._in_range[column[ok], slot[ok]] & (self._input_index[column[ok], slot[ok]]
                                                         == inp[ok])
        if not ok.all():
            raise ValueError("synapses outside the potential windows: the pools do not belong "
                             "to this geometry")
        self._potential = np.zeros_like(self._potential)
        self._perm = np.zeros_like(self._perm)
        self._potential[column, slot] = True
        self._perm[column, slot] = perm
        if self._p.inhibition_radius is None:
            self._update_inhibition_radius()

    # ------------------------------------------------------------------ state

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters (sparsity setting not in use is 0), as a dict."""
        return asdict(self._p)

    @property
    def iteration(self) -> int:
        """Number of learning steps done (inference does not count)."""
        return self._iteration

    @property
    def inhibition_radius(self) -> int:
        """Current inhibition radius; with global inhibition max(column_dimensions), as htm.core."""
        if self._p.global_inhibition:
            return max(self._p.column_dimensions)
        return self._radius

    def _dense(self, values: np.ndarray, dtype) -> np.ndarray:
        out = np.zeros((self.num_columns, self.num_inputs), dtype)
        col, slot = np.nonzero(self._in_range)
        out[col, self._input_index[col, slot]] = values[col, slot]
        return out

    @property
    def permanences(self) -> np.ndarray:
        """(num_columns, num_inputs) float64 copy of the permanences; 0 outside the pools.

        Row c is column c in raster order (c = i * W + j); column k is flat input k.
        """
        return self._dense(self._perm, np.float64)

    @property
    def potential(self) -> np.ndarray:
        """(num_columns, num_inputs) bool copy: input k is in column c's potential pool."""
        return self._dense(self._potential, bool)

    @property
    def connected(self) -> np.ndarray:
        """(num_columns, num_inputs) bool copy: potential synapses at or above syn_perm_connected."""
        return self._dense(self._connected(), bool)

    def _grid(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(self.column_dimensions).copy()

    @property
    def active_duty_cycles(self) -> np.ndarray:
        """column_dimensions float64 copy of the active duty cycles."""
        return self._grid(self._active_duty)

    @property
    def overlap_duty_cycles(self) -> np.ndarray:
        """column_dimensions float64 copy of the overlap duty cycles."""
        return self._grid(self._overlap_duty)

    @property
    def min_overlap_duty_cycles(self) -> np.ndarray:
        """column_dimensions float64 copy of the weak-column thresholds (set on update rounds)."""
        return self._grid(self._min_overlap_duty)

    @property
    def boost_factors(self) -> np.ndarray:
        """column_dimensions float64 copy of the boost factors."""
        return self._grid(self._boost)

    # ------------------------------------------------------------------ computation

    def _connected(self) -> np.ndarray:
        return self._potential & (self._perm >= self._p.syn_perm_connected - _EPSILON)

    def overlap(self, x) -> np.ndarray:
        """Raw overlap of input `x` (connected synapses on active inputs), column_dimensions int.

        No stimulus threshold and no boost; the state does not change.
        """
        x = check_binary(x, self.input_dimensions, batch=False, what="input_dimensions").reshape(-1)
        counts = np.count_nonzero(self._connected() & x[self._input_index], axis=1)
        return counts.reshape(self.column_dimensions)

    def _active(self, overlap: np.ndarray) -> np.ndarray:
        """Active columns (T, N) bool from raw overlaps (T, N): threshold, boost, inhibition.

        A column beats another when its boosted overlap is larger, or equal with a lower raster
        index; this order is total, so the winners never depend on evaluation order.
        """
        p = self._p
        t, n = overlap.shape
        overlap = np.where(overlap >= p.stimulus_threshold, overlap, 0)
        boosted = overlap * self._boost
        if p.global_inhibition:
            k = self._k_global
            if k >= n:
                return overlap > 0
            kth = np.partition(boosted, n - k, axis=1)[:, n - k:n - k + 1]
            above = boosted > kth
            tied = boosted == kth
            # the k-th value may be shared: the lowest indices among the tied fill the k places
            room = k - above.sum(1, keepdims=True)
            return (overlap > 0) & (above | (tied & (np.cumsum(tied, axis=1) <= room)))
        grid = boosted.reshape((t,) + self.column_dimensions)
        beaten = np.zeros(grid.shape, np.int32)
        for neighbour, lower in zip(self._nbhd.views(grid, -np.inf), self._nbhd.lower):
            beaten += (neighbour > grid) | ((neighbour == grid) & lower)
        return (overlap > 0) & (beaten.reshape(t, n) < self._num_active_local)

    def compute(self, x, *, learn: bool) -> np.ndarray:
        """Process one binary input of shape input_dimensions; return the active columns.

        Returns a bool array of shape column_dimensions. With ``learn=True`` the permanences,
        duty cycles, boost factors and (on update rounds) the inhibition radius and weak-column
        thresholds adapt; with ``learn=False`` no state changes.
        """
        learn = _need_bool("learn", learn)
        x = check_binary(x, self.input_dimensions, batch=False, what="input_dimensions").reshape(-1)
        xin = x[self._input_index]
        overlap = np.count_nonzero(self._connected() & xin, axis=1)
        active = self._active(overlap[None, :])[0]
        if learn:
            self._learn(xin, overlap, active)
        return active.reshape(self.column_dimensions)

    def run(self, X, *, learn: bool,
            progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Process a batch X of shape (T, *input_dimensions); return (T, *column_dimensions) bool.

        Learning processes the inputs one by one (identical to repeated `compute`); inference
        (``learn=False``) is vectorised over inputs and gives the same result as repeated
        ``compute(x, learn=False)``. `progress`, if given, is called with the number of inputs
        just finished.
        """
        learn = _need_bool("learn", learn)
        X = check_binary(X, self.input_dimensions, batch=True, what="input_dimensions")
        t = X.shape[0]
        out = np.zeros((t,) + self.column_dimensions, bool)
        if learn:
            for i in range(t):
                out[i] = self.compute(X[i], learn=True)
                if progress is not None:
                    progress(1)
            return out
        flat = X.reshape(t, -1)
        connected = self._connected()
        n = self.num_columns
        dense = n * self.num_inputs <= _DENSE_LIMIT
        if dense:
            # float32 sums of 0/1 are exact below 2**24, so the product gives integer overlaps
            weights = np.zeros((self.num_inputs, n), np.float32)
            col, slot = np.nonzero(connected)
            weights[self._input_index[col, slot], col] = 1.0
        chunk = max(1, _CHUNK_PAIRS // (n if dense else connected.size))
        for start in range(0, t, chunk):
            block = flat[start:start + chunk]
            if dense:
                overlap = (block.astype(np.float32) @ weights).astype(np.int64)
            else:
                overlap = np.count_nonzero(block[:, self._input_index] & connected, axis=2)
            out[start:start + chunk] = self._active(overlap).reshape(
                (block.shape[0],) + self.column_dimensions)
            if progress is not None:
                progress(block.shape[0])
        return out

    # ------------------------------------------------------------------ learning

    def _learn(self, xin: np.ndarray, overlap: np.ndarray, active: np.ndarray) -> None:
        """One learning step, in htm.core's order."""
        p = self._p
        self._iteration += 1

        winners = np.flatnonzero(active)
        if winners.size:
            perm = self._perm[winners]
            perm += np.where(xin[winners], p.syn_perm_active_inc, -p.syn_perm_inactive_dec)
            np.clip(perm, 0.0, 1.0, out=perm)
            self._perm[winners] = np.where(self._potential[winners], perm, 0.0)
            self._raise_to_threshold(winners)

        period = min(p.duty_cycle_period, self._iteration)
        overlapped = overlap >= max(p.stimulus_threshold, 1)
        self._overlap_duty = (self._overlap_duty * (period - 1) + overlapped) / period
        self._active_duty = (self._active_duty * (period - 1) + active) / period

        weak = np.flatnonzero(self._overlap_duty < self._min_overlap_duty)
        if weak.size and p.syn_perm_below_stimulus_inc > 0:
            perm = np.minimum(self._perm[weak] + p.syn_perm_below_stimulus_inc, 1.0)
            self._perm[weak] = np.where(self._potential[weak], perm, 0.0)

        self._update_boost()
        if self._iteration % p.update_period == 0:
            if p.inhibition_radius is None:
                self._update_inhibition_radius()
            self._update_min_duty()

    def _raise_to_threshold(self, columns: np.ndarray) -> None:
        """Columns with fewer than stimulus_threshold connected synapses get all their potential
        permanences raised by one amount, just enough to connect stimulus_threshold of them
        (all of a smaller pool): a column must stay able to reach the threshold."""
        need = self._p.stimulus_threshold
        if need == 0 or columns.size == 0:
            return
        c = self._p.syn_perm_connected
        perm = self._perm[columns]
        pot = self._potential[columns]
        n_connected = np.count_nonzero(pot & (perm >= c - _EPSILON), axis=1)
        pool = pot.sum(1)
        short = (n_connected < np.minimum(need, pool)) & (pool > 0)
        if not short.any():
            return
        rows, perm, pot, pool = columns[short], perm[short], pot[short], pool[short]
        # the k-th largest potential permanence must reach the threshold
        ordered = -np.sort(np.where(pot, -perm, np.inf), axis=1)
        kth = ordered[np.arange(rows.size), np.minimum(need, pool) - 1]
        raised = np.clip(perm + (c - kth)[:, None], 0.0, 1.0)
        self._perm[rows] = np.where(pot, raised, 0.0)

    def _update_boost(self) -> None:
        p = self._p
        if p.boost_strength == 0:
            return
        if p.global_inhibition:
            target = (p.local_area_density if p.local_area_density
                      else min(p.num_active_columns_per_inh_area / self.num_columns, 0.5))
        else:
            target = self._nbhd.mean(self._active_duty.reshape(self.column_dimensions)).reshape(-1)
        self._boost = np.exp(p.boost_strength * (target - self._active_duty))

    def _update_min_duty(self) -> None:
        pct = self._p.min_pct_overlap_duty_cycles
        if self._p.global_inhibition:
            self._min_overlap_duty = np.full(self.num_columns, pct * self._overlap_duty.max())
        else:
            largest = self._nbhd.max(self._overlap_duty.reshape(self.column_dimensions))
            self._min_overlap_duty = pct * largest.reshape(-1)

    def _connected_span(self) -> float:
        """Connected span averaged over the two axes and all columns (0 for an unconnected one)."""
        p = self._p
        n = self.num_columns
        connected = self._connected().reshape(n, self._la, self._lb)
        spans = np.zeros(n)
        for axis, occupied, starts, n_in, n_cols, length in (
                (0, connected.any(2), self._row_start, p.input_dimensions[0],
                 p.column_dimensions[0], self._la),
                (1, connected.any(1), self._col_start, p.input_dimensions[1],
                 p.column_dimensions[1], self._lb)):
            some = occupied.any(1)
            if not p.wrap_around:
                first = np.argmax(occupied, axis=1)
                last = length - 1 - np.argmax(occupied[:, ::-1], axis=1)
                spans += np.where(some, last - first + 1, 0)
                continue
            # on a ring the span is the ring minus its longest gap between connected inputs
            column_start = starts[np.divmod(np.arange(n), p.column_dimensions[1])[axis]]
            ring = np.zeros((n, n_in), bool)
            position = (column_start[:, None] + np.arange(length)[None, :]) % n_in
            ring[np.repeat(np.arange(n), length), position.reshape(-1)] = occupied.reshape(-1)
            doubled = np.concatenate([ring, ring], axis=1)
            idx = np.arange(2 * n_in)
            last_seen = np.maximum.accumulate(np.where(doubled, idx, -1), axis=1)
            gap = np.minimum((idx - last_seen).max(1), n_in)
            spans += np.where(some, n_in - gap, 0)
        return float(spans.mean() / 2)

    def _update_inhibition_radius(self) -> None:
        """htm.core's adaptive radius from the connected span and the columns per input."""
        p = self._p
        if p.global_inhibition:
            return
        columns_per_input = np.mean([c / i for c, i in zip(p.column_dimensions,
                                                           p.input_dimensions)])
        diameter = self._connected_span() * columns_per_input
        radius = max(1.0, (diameter - 1) / 2)
        self._set_radius(int(math.floor(radius + 0.5)))

    def _set_radius(self, radius: int) -> None:
        if radius == self._radius or self._p.global_inhibition:
            return
        p = self._p
        self._radius = radius
        self._nbhd = _Neighbourhood(p.column_dimensions, radius, p.wrap_around)
        if p.num_active_columns_per_inh_area:
            area = min((2 * radius + 1) ** 2, self.num_columns)
            density = min(p.num_active_columns_per_inh_area / area, 0.5)
        else:
            density = p.local_area_density
        self._num_active_local = np.floor(0.5 + density * self._nbhd.size).astype(
            np.int64).reshape(-1)


# ---------------------------------------------------------------------- htm.core adapter


class HtmCoreSP:
    """htm.core's own ``SpatialPooler`` behind SoftwareSP's ``compute``/``run`` interface.

    Takes the same parameters as `SoftwareSP` (validated the same way). Needs the htm.core
    package (``htm.bindings.algorithms``); without it the constructor raises ImportError. A fixed
    ``inhibition_radius`` only sets htm.core's starting radius: htm.core recomputes it on every
    update round. ``num_active_columns_per_inh_area`` needs an htm.core build that still has it.
    The wrapped object is ``self.sp``.
    """

    def __init__(self, **params: Any):
        try:  # htm.core is an optional dependency: imported only when this wrapper is built
            from htm.bindings.algorithms import SpatialPooler
            from htm.bindings.sdr import SDR
        except ImportError as exc:
            raise ImportError("HtmCoreSP needs htm.core (module htm.bindings.algorithms), which "
                              "is not installed; install htm.core or use SoftwareSP") from exc
        p = _resolve(**params)
        self._p = p
        self.input_dimensions = p.input_dimensions
        self.column_dimensions = p.column_dimensions
        kwargs: dict[str, Any] = dict(
            inputDimensions=list(p.input_dimensions),
            columnDimensions=list(p.column_dimensions),
            potentialRadius=p.potential_radius,
            potentialPct=p.potential_pct,
            globalInhibition=p.global_inhibition,
            localAreaDensity=p.local_area_density,
            stimulusThreshold=p.stimulus_threshold,
            synPermInactiveDec=p.syn_perm_inactive_dec,
            synPermActiveInc=p.syn_perm_active_inc,
            synPermConnected=p.syn_perm_connected,
            minPctOverlapDutyCycle=p.min_pct_overlap_duty_cycles,
            dutyCyclePeriod=p.duty_cycle_period,
            boostStrength=p.boost_strength,
            seed=p.seed,
            spVerbosity=0,
            wrapAround=p.wrap_around,
        )
        if p.num_active_columns_per_inh_area:
            kwargs["numActiveColumnsPerInhArea"] = p.num_active_columns_per_inh_area
        try:
            self.sp = SpatialPooler(**kwargs)
        except TypeError as exc:
            raise ValueError(f"this htm.core build rejects the parameters: {exc}") from exc
        for setter, value in (("setUpdatePeriod", p.update_period),
                              ("setSynPermBelowStimulusInc", p.syn_perm_below_stimulus_inc),
                              ("setInhibitionRadius", p.inhibition_radius)):
            if value is not None and hasattr(self.sp, setter):
                getattr(self.sp, setter)(value)
        self._input = SDR(list(p.input_dimensions))
        self._output = SDR(list(p.column_dimensions))

    def compute(self, x, *, learn: bool) -> np.ndarray:
        """Process one binary input; return the active columns (column_dimensions bool)."""
        learn = _need_bool("learn", learn)
        x = check_binary(x, self.input_dimensions, batch=False, what="input_dimensions")
        self._input.sparse = np.flatnonzero(x).astype(np.uint32)
        self.sp.compute(self._input, learn, self._output)
        out = np.zeros(self.column_dimensions[0] * self.column_dimensions[1], bool)
        out[np.asarray(self._output.sparse, dtype=np.int64)] = True
        return out.reshape(self.column_dimensions)

    def run(self, X, *, learn: bool,
            progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Process a batch (T, *input_dimensions) one by one; return (T, *column_dimensions)."""
        learn = _need_bool("learn", learn)
        X = check_binary(X, self.input_dimensions, batch=True, what="input_dimensions")
        out = np.zeros((X.shape[0],) + self.column_dimensions, bool)
        for i in range(X.shape[0]):
            out[i] = self.compute(X[i], learn=learn)
            if progress is not None:
                progress(1)
        return out
