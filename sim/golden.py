"""The golden model: an executable, bit-exact definition of what the cell array computes.

It implements SPEC.md with NumPy integer arithmetic, vectorised over cells (and over inputs
when not learning). The HDL, its simulations and the boards must produce exactly its bits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .config import MIN_DUTY_FRAC_BITS, SPConfig
from .inputs import check_binary, flag_runs
from .layout import NEIGHBOUR_OFFSETS, Layout, initial_permanences, layout

__all__ = ["GoldenModel", "SPState", "check_inputs"]

STATE_FORMAT = "cellsp-state-v1"
# Dense (cells x inputs) connection matrices up to this many entries use BLAS for inference.
_DENSE_LIMIT = 1 << 24
# Batched gathers are cut into chunks of about this many synapse reads.
_CHUNK_READS = 1 << 22


@dataclass
class SPState:
    """The whole mutable state of the array, shaped by cell (H, W, ...).

    permanences (H, W, window) uint16, active_duty and overlap_duty (H, W) uint32,
    boost (H, W) uint16. The potential pools are not state: they follow from the config.
    """

    permanences: np.ndarray
    active_duty: np.ndarray
    overlap_duty: np.ndarray
    boost: np.ndarray

    def copy(self) -> "SPState":
        return SPState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def differences(self, other: "SPState", limit: int = 10) -> list[str]:
        """Human-readable differences from `other`: field, cell (row, col[, slot]) and values."""
        out: list[str] = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a.shape != b.shape:
                out.append(f"{f.name}: shape {a.shape} != {b.shape}")
                continue
            for where in np.argwhere(a != b)[: max(0, limit - len(out))]:
                idx = tuple(int(v) for v in where)
                out.append(f"{f.name}{list(idx)}: {int(a[idx])} != {int(b[idx])}")
        return out


def check_inputs(cfg: SPConfig, x, batch: bool) -> np.ndarray:
    """Validate input(s) for `cfg` (shape input_shape, or (T,) + input_shape); return bool."""
    return check_binary(x, cfg.input_shape, batch, what="config input_shape")


class GoldenModel:
    """Bit-exact NumPy model of the cellular spatial pooler (SPEC.md).

    ``step(x, learn=...)`` processes one input and returns the (H, W) bool map of active cells;
    ``run(X, learn=...)`` processes a batch. `learn` is keyword-only and required, as in
    `SoftwareSP` and the host `Driver`, so that no call learns or infers by default. The state arrays (``permanences``, ``active_duty``,
    ``overlap_duty``, ``boost``) are read-only views; change the state with `set_state`.
    """

    def __init__(self, config: SPConfig | None = None):
        self.config = cfg = config if config is not None else SPConfig()
        self.layout: Layout = layout(cfg)
        n, window = self.layout.potential.shape
        self._n = n
        # Synapse arrays are stored slot-major, (window, cells): a reduction over a cell's
        # slots is then a sum of `window` contiguous rows, which NumPy does fastest.
        self._input_index = np.ascontiguousarray(self.layout.input_index.T)
        self._potential = np.ascontiguousarray(self.layout.potential.T)
        self._perm = np.ascontiguousarray(initial_permanences(cfg, self.layout.potential).T)
        self._active_duty = np.zeros(n, np.uint32)
        self._overlap_duty = np.zeros(n, np.uint32)
        self._boost = np.full(n, cfg.boost_one, np.uint16)
        self._table = np.asarray(cfg.boost_table, np.int64)
        self._step_delta = np.array([-cfg.perm_dec, cfg.perm_inc], np.int32)  # by input bit
        self._min_duty_q = cfg.min_overlap_duty_q
        self._neighbourhood_size = self.layout.neighbourhood_size.astype(np.int64)
        # Inhibition key: boosted * cells + (cells - 1 - raster index). Keys are distinct, and
        # a neighbour beats a cell exactly when its key is larger (SPEC.md, tie-break).
        self._key_dtype = np.int32 if (n << cfg.boosted_bits) < 2**31 else np.int64
        self._tie = (n - 1 - np.arange(n)).astype(self._key_dtype)
        #: the last step's intermediate values, for inspection and debugging
        self.last: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ state

    def _shaped(self, flat: np.ndarray) -> np.ndarray:
        view = flat.reshape(tuple(self.config.cell_shape) + flat.shape[1:])
        view.flags.writeable = False
        return view

    @property
    def potential(self) -> np.ndarray:
        """(H, W, window) bool: potential pool of every cell (static)."""
        return self._shaped(self._potential.T)

    @property
    def permanences(self) -> np.ndarray:
        """(H, W, window) uint16 permanences; slot p = a*(2r+1) + b for window row a, col b."""
        return self._shaped(self._perm.T)

    @property
    def active_duty(self) -> np.ndarray:
        """(H, W) active duty cycles, fixed point with duty_bits fraction bits."""
        return self._shaped(self._active_duty)

    @property
    def overlap_duty(self) -> np.ndarray:
        """(H, W) overlap duty cycles, fixed point with duty_bits fraction bits."""
        return self._shaped(self._overlap_duty)

    @property
    def boost(self) -> np.ndarray:
        """(H, W) boost factors, fixed point with boost_frac_bits fraction bits."""
        return self._shaped(self._boost)

    @property
    def connected(self) -> np.ndarray:
        """(H, W, window) bool: potential synapses at or above the connected threshold."""
        return self._shaped(self._connected().T)

    def state(self) -> SPState:
        """A copy of the whole state."""
        return SPState(self.permanences.copy(), self.active_duty.copy(),
                       self.overlap_duty.copy(), self.boost.copy())

    def set_state(self, state: SPState) -> None:
        """Replace the whole state, after checking shapes and ranges against the config."""
        cfg = self.config
        h, w = cfg.cell_shape
        checks = (("permanences", (h, w, cfg.window_size), cfg.perm_max),
                  ("active_duty", (h, w), cfg.duty_one), ("overlap_duty", (h, w), cfg.duty_one),
                  ("boost", (h, w), (1 << cfg.boost_bits) - 1))
        for name, shape, top in checks:
            value = np.asarray(getattr(state, name))
            if value.shape != shape:
                raise ValueError(f"state.{name} has shape {value.shape}, expected {shape}")
            if not np.issubdtype(value.dtype, np.integer):
                raise ValueError(f"state.{name} has dtype {value.dtype}, expected integers")
            if value.size and (value.min() < 0 or value.max() > top):
                raise ValueError(f"state.{name} has values outside [0, {top}]")
        perm = np.asarray(state.permanences).reshape(self._n, -1).T
        if np.any(perm[~self._potential] != 0):
            raise ValueError("state.permanences is non-zero on slots outside the potential pool: "
                             "the state belongs to another config or seed")
        self._perm[...] = perm
        self._active_duty[...] = np.asarray(state.active_duty).reshape(-1)
        self._overlap_duty[...] = np.asarray(state.overlap_duty).reshape(-1)
        self._boost[...] = np.asarray(state.boost).reshape(-1)

    def save(self, path: str | Path) -> None:
        """Write config and whole state to an .npz file (loadable by `GoldenModel.load`)."""
        s = self.state()
        with open(path, "wb") as fh:
            np.savez_compressed(fh, format=np.array(STATE_FORMAT),
                                config=np.array(json.dumps(self.config.to_dict())),
                                permanences=s.permanences, active_duty=s.active_duty,
                                overlap_duty=s.overlap_duty, boost=s.boost)

    @classmethod
    def load(cls, path: str | Path) -> "GoldenModel":
        """A model with the config and state saved by `save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != STATE_FORMAT:
                    raise ValueError(f"unknown state format {str(data['format'])!r}")
                cfg = SPConfig.from_dict(json.loads(str(data["config"])))
                state = SPState(*(data[k] for k in ("permanences", "active_duty",
                                                    "overlap_duty", "boost")))
        except (OSError, KeyError, EOFError, ValueError) as exc:
            raise ValueError(f"cannot load state from {path}: {exc}") from None
        model = cls(cfg)
        model.set_state(state)
        return model

    # ------------------------------------------------------------------ computation

    def _connected(self) -> np.ndarray:
        """(window, cells) bool."""
        return self._potential & (self._perm >= self.config.connected_threshold)

    def _padded(self, grid: np.ndarray, absent) -> np.ndarray:
        """grid (..., H, W) with a one-cell border ring: the opposite edge ('wrap') or `absent`."""
        h, w = self.config.cell_shape
        padded = np.empty(grid.shape[:-2] + (h + 2, w + 2), grid.dtype)
        padded[..., 1:-1, 1:-1] = grid
        if self.config.edge == "wrap":
            padded[..., 0, 1:-1] = grid[..., -1, :]
            padded[..., -1, 1:-1] = grid[..., 0, :]
            padded[..., :, 0] = padded[..., :, -2]
            padded[..., :, -1] = padded[..., :, 1]
        else:
            padded[..., 0, :] = absent
            padded[..., -1, :] = absent
            padded[..., :, 0] = absent
            padded[..., :, -1] = absent
        return padded

    def _neighbours(self, grid: np.ndarray, absent) -> list[np.ndarray]:
        """The 8 neighbour values of every cell of grid (..., H, W), in NEIGHBOUR_OFFSETS order."""
        h, w = self.config.cell_shape
        padded = self._padded(grid, absent)
        return [padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in NEIGHBOUR_OFFSETS]

    def _box(self, values: np.ndarray, op) -> np.ndarray:
        """op (np.add or np.maximum) over each cell's 3x3 neighbourhood including itself, for
        non-negative (cells,) values; absent neighbours count as 0. Done as two separable passes."""
        p = self._padded(values.reshape(self.config.cell_shape), 0)
        rows = op(op(p[:-2], p[1:-1]), p[2:])
        return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:]).reshape(-1)

    def _overlap_and_boosted(self, overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(overlap after the stimulus threshold, (overlap * boost) >> boost_frac_bits)."""
        cfg = self.config
        overlap = overlap.astype(self._key_dtype)
        overlap[overlap < cfg.stimulus_threshold] = 0
        return overlap, (overlap * self._boost) >> cfg.boost_frac_bits

    def _inhibit(self, boosted: np.ndarray) -> np.ndarray:
        """k-winners local inhibition over the 3x3 neighbourhood; boosted is (..., cells)."""
        h, w = self.config.cell_shape
        key = (boosted * self._n + self._tie).reshape(boosted.shape[:-1] + (h, w))
        beaten_by = np.zeros(key.shape, np.int8)
        for neighbour in self._neighbours(key, -1):
            beaten_by += neighbour > key
        active = (boosted > 0) & (beaten_by.reshape(boosted.shape) < self.config.winners)
        return active

    def step(self, x, *, learn: bool) -> np.ndarray:
        """Process one (H_in, W_in) binary input; return the (H, W) bool map of active cells."""
        return self._step(check_inputs(self.config, x, batch=False).reshape(-1), learn)

    def _step(self, x: np.ndarray, learn: bool) -> np.ndarray:
        """step() on an already checked, flat bool input."""
        xin = x[self._input_index]  # (window, cells): the input bit under every slot
        overlap = np.count_nonzero(self._connected() & xin, axis=0)
        overlap, boosted = self._overlap_and_boosted(overlap)
        active = self._inhibit(boosted)
        self.last = {"overlap": self._shaped(overlap), "boosted": self._shaped(boosted),
                     "active": self._shaped(active)}
        if learn:
            self._learn(xin, active)
            self._update_duty(active, overlap > 0)
            self._update_boost()
            self._bump_weak()
        return self._shaped(active)

    def _learn(self, xin: np.ndarray, active: np.ndarray) -> None:
        """Active cells: +perm_inc on active inputs, -perm_dec on the others, saturating."""
        cells = np.flatnonzero(active)
        if cells.size == 0:
            return
        perm = self._perm[:, cells].astype(np.int32)
        perm += self._step_delta[xin[:, cells].view(np.uint8)]
        self._perm[:, cells] = self._saturate(perm, cells)

    def _saturate(self, perm: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Clamp updated permanences of `cells` to [0, perm_max]; non-potential slots stay 0."""
        np.maximum(perm, 0, out=perm)
        np.minimum(perm, self.config.perm_max, out=perm)
        perm *= self._potential[:, cells]
        return perm

    def _update_duty(self, active: np.ndarray, overlapped: np.ndarray) -> None:
        """duty <- duty - (duty >> period_log2) + hit * 2**(duty_bits - period_log2)."""
        cfg = self.config
        period = np.uint32(cfg.duty_period_log2)
        unit = np.uint32(1 << (cfg.duty_bits - cfg.duty_period_log2))
        for duty, hit in ((self._active_duty, active), (self._overlap_duty, overlapped)):
            duty -= duty >> period
            duty += hit.astype(np.uint32) * unit

    def _update_boost(self) -> None:
        """Boost from the rounded difference between the neighbourhood's mean duty and the own."""
        cfg = self.config
        q, d = cfg.boost_index_bits, cfg.duty_bits
        duty = self._active_duty.astype(np.int64)
        total = self._box(duty, np.add)
        n = self._neighbourhood_size
        # (target - duty) * n, compared as sums: no division by the neighbourhood size
        diff = total - n * duty
        # round-half-up of (diff / n) * 2**(q - d), written as one floor of integers
        index = ((diff << (q + 1)) + (n << d)) // (n << (d + 1))
        np.minimum(np.maximum(index, -(1 << q), out=index), 1 << q, out=index)
        self._boost[...] = self._table[index + (1 << q)]

    def _bump_weak(self) -> None:
        """Weak cells (overlap duty below a fraction of the neighbourhood's largest) gain perm_bump."""
        cfg = self.config
        duty = self._overlap_duty.astype(np.int64)
        largest = self._box(duty, np.maximum)
        weak = (duty << MIN_DUTY_FRAC_BITS) < largest * self._min_duty_q
        self.last["weak"] = self._shaped(weak)
        cells = np.flatnonzero(weak)
        if cells.size == 0 or cfg.perm_bump == 0:
            return
        perm = self._perm[:, cells].astype(np.int32)
        perm += cfg.perm_bump
        self._perm[:, cells] = self._saturate(perm, cells)

    def run(self, X, *, learn, progress=None) -> np.ndarray:
        """Process a batch (T, H_in, W_in); return (T, H, W) active maps.

        `learn` is a bool or a length-T sequence of per-input flags. Runs of inputs without
        learning are computed together (no state changes between them), learning inputs one by
        one. `progress`, if given, is called with the number of inputs just finished.
        """
        X = check_inputs(self.config, X, batch=True)
        t = X.shape[0]
        runs = flag_runs(learn, t)
        out = np.zeros((t,) + tuple(self.config.cell_shape), bool)
        for start, stop, learning in runs:
            if learning:
                flat = X.reshape(t, -1)
                for i in range(start, stop):
                    out[i] = self._step(flat[i], learn=True)
                    if progress:
                        progress(1)
            else:
                out[start:stop] = self.infer(X[start:stop], progress=progress)
        return out

    def infer(self, X, progress=None) -> np.ndarray:
        """Active maps (T, H, W) for a batch without learning; the state does not change."""
        cfg = self.config
        X = check_inputs(cfg, X, batch=True)
        t = X.shape[0]
        flat = X.reshape(t, -1)
        connected = self._connected()
        n = self._n
        out = np.empty((t, n), bool)
        dense = n * cfg.num_inputs <= _DENSE_LIMIT
        if dense:
            # overlaps as one matrix product; float32 sums of 0/1 are exact below 2**24
            weights = np.zeros((cfg.num_inputs, n), np.float32)
            cells = np.broadcast_to(np.arange(n), connected.shape)
            weights[self._input_index[connected], cells[connected]] = 1.0
            chunk = 512
        else:
            chunk = max(1, _CHUNK_READS // connected.size)
        for start in range(0, t, chunk):
            block = flat[start:start + chunk]
            if dense:
                overlap = block.astype(np.float32) @ weights
            else:
                overlap = np.count_nonzero(block[:, self._input_index] & connected, axis=1)
            _, boosted = self._overlap_and_boosted(overlap)
            out[start:start + chunk] = self._inhibit(boosted)
            if progress:
                progress(block.shape[0])
        return out.reshape((t,) + tuple(cfg.cell_shape))
