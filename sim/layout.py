"""Geometry of the cellular SP: where each cell's window lies in the input, who its neighbours
are, and the seeded initial state. Pure functions of an `SPConfig` (SPEC.md sections 2-4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import FRACTION_BITS, SPConfig
from .rng import STREAM_PERM, STREAM_POOL, draw

__all__ = ["NEIGHBOUR_OFFSETS", "Layout", "layout", "initial_permanences"]

#: The 8 neighbours of a cell, in this fixed order (row offset, column offset).
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def cell_centres(n_cells: int, n_inputs: int) -> np.ndarray:
    """Input coordinate of each cell along one axis: floor((2i+1) * n_inputs / (2 * n_cells))."""
    i = np.arange(n_cells, dtype=np.int64)
    return ((2 * i + 1) * n_inputs) // (2 * n_cells)


@dataclass(frozen=True)
class Layout:
    """Static wiring derived from a config; arrays are indexed by raster cell index c = i*W + j.

    input_index: (cells, window) flat input index of each window slot (0 where out of range).
    in_range:    (cells, window) slot lies inside the input (always True with 'wrap').
    potential:   (cells, window) slot is in the cell's potential pool.
    neighbour_index: (8, cells) raster index of each neighbour, `cells` where absent ('clip').
    neighbourhood_size: (cells,) present neighbours + 1 (the cell itself).
    """

    input_index: np.ndarray
    in_range: np.ndarray
    potential: np.ndarray
    neighbour_index: np.ndarray
    neighbourhood_size: np.ndarray


def layout(cfg: SPConfig) -> Layout:
    """Compute the static wiring of `cfg` (SPEC.md: input mapping, pools, neighbourhoods)."""
    h, w = cfg.cell_shape
    hin, win = cfg.input_shape
    r = cfg.potential_radius
    side = cfg.window_side
    offsets = np.arange(-r, r + 1)
    # rows[i, a] / cols[j, b]: input row (column) of window row a (column b) of cell row i (col j)
    rows = cell_centres(h, hin)[:, None] + offsets[None, :]
    cols = cell_centres(w, win)[:, None] + offsets[None, :]
    if cfg.edge == "wrap":
        rows_ok = np.ones(rows.shape, bool)
        cols_ok = np.ones(cols.shape, bool)
        rows, cols = rows % hin, cols % win
    else:
        rows_ok = (rows >= 0) & (rows < hin)
        cols_ok = (cols >= 0) & (cols < win)
        rows, cols = np.where(rows_ok, rows, 0), np.where(cols_ok, cols, 0)
    # (h, w, side, side) -> (cells, window); slot p = a * side + b
    input_index = (rows[:, None, :, None] * win + cols[None, :, None, :]).reshape(h * w, side * side)
    in_range = (rows_ok[:, None, :, None] & cols_ok[None, :, None, :]).reshape(h * w, side * side)

    potential = _potential_pools(cfg, in_range)

    n = h * w
    ci, cj = np.divmod(np.arange(n), w)
    nb_index = np.empty((8, n), np.int64)
    for o, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        ni, nj = ci + dy, cj + dx
        if cfg.edge == "wrap":
            nb_index[o] = (ni % h) * w + (nj % w)
        else:
            ok = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
            nb_index[o] = np.where(ok, ni * w + nj, n)
    present = nb_index < n
    return Layout(input_index=input_index, in_range=in_range, potential=potential,
                  neighbour_index=nb_index,
                  neighbourhood_size=present.sum(0) + 1)


def _potential_pools(cfg: SPConfig, in_range: np.ndarray) -> np.ndarray:
    """Each cell keeps the pool_size(in-range count) in-range slots with the smallest draws."""
    n, window = in_range.shape
    keys = draw(cfg.seed, STREAM_POOL, np.arange(n)[:, None], np.arange(window)[None, :])
    # Out-of-range slots sort last; a stable sort breaks (impossible) equal keys by slot index.
    keys = np.where(in_range, keys, np.uint64(2**64 - 1))
    order = np.argsort(keys, axis=1, kind="stable")
    counts = in_range.sum(1)
    half = 1 << (FRACTION_BITS - 1)
    pool_sizes = (counts * cfg.potential_q + half) >> FRACTION_BITS
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(window)[None, :].repeat(n, 0), axis=1)
    return (rank < pool_sizes[:, None]) & in_range


def initial_permanences(cfg: SPConfig, potential: np.ndarray) -> np.ndarray:
    """Seeded initial permanences (cells, window) as uint16; 0 on non-potential slots.

    u = draw(seed, STREAM_PERM, cell, slot); connected when u >> 48 < init_connected_q;
    offset = (u mod 2**32) mod init_spread; value = thr + offset if connected else thr - 1 - offset.
    """
    n, window = potential.shape
    u = draw(cfg.seed, STREAM_PERM, np.arange(n)[:, None], np.arange(window)[None, :])
    connected = (u >> np.uint64(48)) < np.uint64(cfg.init_connected_q)
    offset = ((u & np.uint64(0xFFFFFFFF)) % np.uint64(cfg.init_spread)).astype(np.int64)
    thr = cfg.connected_threshold
    value = np.where(connected, thr + offset, thr - 1 - offset)
    return np.where(potential, value, 0).astype(np.uint16)
