"""A second, independent implementation of SPEC.md: plain Python integers and loops, one cell
and one slot at a time, written from the SPEC text and sharing no code with the golden model
except the config type. The tests hold the vectorised golden model against it."""

from __future__ import annotations

import math

MASK64 = (1 << 64) - 1


def mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def draw(seed: int, stream: int, c: int, p: int) -> int:
    return mix64(mix64(mix64(seed) ^ stream) ^ (c * 2**16 + p))


def quantise(fraction: float, bits: int) -> int:
    from fractions import Fraction
    return math.floor(Fraction(fraction) * 2**bits + Fraction(1, 2))


class ReferenceSP:
    """SPEC.md, transcribed literally. State is kept in Python lists indexed by raster cell."""

    def __init__(self, cfg):
        self.cfg = cfg
        H, W = cfg.cell_shape
        Hin, Win = cfg.input_shape
        r = cfg.potential_radius
        S = 2 * r + 1
        self.cells = [(i, j) for i in range(H) for j in range(W)]
        self.slots = []      # per cell: list of (slot p, input flat index or None)
        self.pool = []       # per cell: set of potential slots
        self.perm = []       # per cell: list of S*S permanences
        pq = quantise(cfg.potential_pct, 16)
        cq = quantise(cfg.init_connected_pct, 16)
        thr = cfg.connected_threshold
        for c, (i, j) in enumerate(self.cells):
            ci = ((2 * i + 1) * Hin) // (2 * H)
            cj = ((2 * j + 1) * Win) // (2 * W)
            slots = []
            for a in range(S):
                for b in range(S):
                    y, x = ci + a - r, cj + b - r
                    if cfg.edge == "wrap":
                        slots.append((a * S + b, (y % Hin) * Win + (x % Win)))
                    elif 0 <= y < Hin and 0 <= x < Win:
                        slots.append((a * S + b, y * Win + x))
                    else:
                        slots.append((a * S + b, None))
            self.slots.append(slots)
            in_range = [p for p, idx in slots if idx is not None]
            n = (len(in_range) * pq + 2**15) >> 16
            ranked = sorted(in_range, key=lambda p: (draw(cfg.seed, 1, c, p), p))
            pool = set(ranked[:n])
            self.pool.append(pool)
            perms = []
            for p in range(S * S):
                if p not in pool:
                    perms.append(0)
                    continue
                u = draw(cfg.seed, 2, c, p)
                o = (u % 2**32) % cfg.init_spread
                perms.append(thr + o if (u >> 48) < cq else thr - 1 - o)
            self.perm.append(perms)
        n_cells = len(self.cells)
        self.active_duty = [0] * n_cells
        self.overlap_duty = [0] * n_cells
        self.boost = [2**cfg.boost_frac_bits] * n_cells

    def neighbours(self, c):
        cfg = self.cfg
        H, W = cfg.cell_shape
        i, j = self.cells[c]
        out = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) == (0, 0):
                    continue
                y, x = i + dy, j + dx
                if cfg.edge == "wrap":
                    out.append((y % H) * W + (x % W))
                elif 0 <= y < H and 0 <= x < W:
                    out.append(y * W + x)
        return out

    def step(self, x_flat, learn):
        cfg = self.cfg
        pmax = 2**cfg.perm_bits - 1
        n_cells = len(self.cells)
        overlap = []
        for c in range(n_cells):
            ov = 0
            for p, idx in self.slots[c]:
                if p in self.pool[c] and self.perm[c][p] >= cfg.connected_threshold and x_flat[idx]:
                    ov += 1
            if ov < cfg.stimulus_threshold:
                ov = 0
            overlap.append(ov)
        boosted = [(overlap[c] * self.boost[c]) >> cfg.boost_frac_bits for c in range(n_cells)]
        active = []
        for c in range(n_cells):
            beaten = 0
            for n in self.neighbours(c):
                if boosted[n] > boosted[c] or (boosted[n] == boosted[c] and n < c):
                    beaten += 1
            active.append(boosted[c] > 0 and beaten < cfg.winners)
        self.last = {"overlap": overlap, "boosted": boosted, "active": active}
        if not learn:
            return active
        for c in range(n_cells):
            if not active[c]:
                continue
            for p, idx in self.slots[c]:
                if p in self.pool[c]:
                    v = self.perm[c][p]
                    self.perm[c][p] = min(v + cfg.perm_inc, pmax) if x_flat[idx] else max(v - cfg.perm_dec, 0)
        D, P = cfg.duty_bits, cfg.duty_period_log2
        for c in range(n_cells):
            self.active_duty[c] = self.active_duty[c] - (self.active_duty[c] >> P) + int(active[c]) * 2**(D - P)
            self.overlap_duty[c] = self.overlap_duty[c] - (self.overlap_duty[c] >> P) + int(overlap[c] > 0) * 2**(D - P)
        q = cfg.boost_index_bits
        table = cfg.boost_table
        new_boost = []
        for c in range(n_cells):
            group = [c] + self.neighbours(c)
            total = sum(self.active_duty[g] for g in group)
            m = len(group)
            diff = total - m * self.active_duty[c]
            i = (diff * 2**(q + 1) + m * 2**D) // (m * 2**(D + 1))
            i = min(max(i, -2**q), 2**q)
            new_boost.append(table[i + 2**q])
        self.boost = new_boost
        M = quantise(cfg.min_overlap_duty_pct, 10)
        for c in range(n_cells):
            mx = max(self.overlap_duty[g] for g in [c] + self.neighbours(c))
            if self.overlap_duty[c] * 2**10 < mx * M:
                for p in self.pool[c]:
                    self.perm[c][p] = min(self.perm[c][p] + cfg.perm_bump, pmax)
        return active
