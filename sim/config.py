"""The one configuration type of cellsp: the parameters of the cellular spatial pooler.

`SPConfig` is taken by the golden model, the HDL, the host driver and the board builds.
Everything that can be derived from it (widths, table contents, pool sizes, the config hash)
is a property computed here, never a stored copy. SPEC.md defines what each field means.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SPConfig", "ConfigError", "FRACTION_BITS", "MIN_DUTY_FRAC_BITS"]

#: Fractions given as floats in the config (potential_pct, init_connected_pct) are quantised
#: to this many bits before use, so that every implementation computes with the same integer.
FRACTION_BITS = 16
#: `min_overlap_duty_pct` is quantised to this many fraction bits (SPEC.md, weak cells).
MIN_DUTY_FRAC_BITS = 10

EDGES = ("wrap", "clip")


class ConfigError(ValueError):
    """An SPConfig field has a wrong type or an impossible value; the message names the field."""


def _quantise(fraction: float, bits: int) -> int:
    """Round-half-up of ``fraction * 2**bits``, computed exactly from the float's value."""
    from fractions import Fraction

    return int(math.floor(Fraction(fraction) * (1 << bits) + Fraction(1, 2)))


@dataclass(frozen=True)
class SPConfig:
    """Parameters of the cellular spatial pooler (see SPEC.md for each rule).

    ``SPConfig()`` is the default config, the one the main job (``cellsp demo``) uses.
    """

    #: Input bit plane, (rows, columns).
    input_shape: tuple[int, int] = (16, 16)
    #: Cell grid, (rows, columns). 32x32 by default: on `digits` 16x16 cells (256 features from
    #: local 3x3 competition) stay 2-5 points of readout accuracy below the raw input.
    cell_shape: tuple[int, int] = (32, 32)
    #: Potential window is (2r+1) x (2r+1) inputs centred on the cell's mapped input position.
    potential_radius: int = 3
    #: Fraction of the (in-range) window that is in a cell's potential pool.
    potential_pct: float = 0.9
    #: "wrap" (torus) or "clip" (no neighbours or inputs beyond the border).
    edge: str = "wrap"
    #: k: a cell is active when fewer than k of its 3x3 neighbours beat it.
    winners: int = 3
    #: Boost factor = exp(boost_strength * (target duty - own duty)); 0 turns boosting off.
    boost_strength: float = 2.0
    #: Seed of the potential pools and the initial permanences.
    seed: int = 42

    #: Width of a permanence (unsigned, saturating at 0 and 2**perm_bits - 1).
    perm_bits: int = 8
    #: A potential synapse is connected when its permanence is >= this.
    connected_threshold: int = 128
    #: Permanence increment of a synapse on an active input of an active cell.
    perm_inc: int = 12
    #: Permanence decrement of a synapse on an inactive input of an active cell.
    perm_dec: int = 4
    #: Permanence added to every potential synapse of a weak cell.
    perm_bump: int = 8
    #: Fraction of potential synapses that start connected.
    init_connected_pct: float = 0.5
    #: Initial permanences lie within this distance of the connected threshold.
    init_spread: int = 32
    #: Overlaps below this count as zero.
    stimulus_threshold: int = 2

    #: Width of a boost factor (unsigned fixed point).
    boost_bits: int = 8
    #: Fraction bits of a boost factor: 1.0 is 2**boost_frac_bits.
    boost_frac_bits: int = 4
    #: The boost table has 2**(q+1) + 1 entries: differences -1 .. 1 in steps of 2**-q.
    boost_index_bits: int = 4

    #: Fraction bits of a duty cycle: 1.0 is 2**duty_bits (the register is duty_bits+1 wide).
    duty_bits: int = 12
    #: Duty cycles are moving averages over 2**duty_period_log2 learning steps.
    duty_period_log2: int = 8
    #: A cell is weak when its overlap duty is below this fraction of its neighbourhood's maximum.
    min_overlap_duty_pct: float = 0.0625

    # ------------------------------------------------------------------ validation

    def __post_init__(self):
        for name in ("input_shape", "cell_shape"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def need_int(name: str, lo: int, hi: int) -> int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(f"{name} = {value} is outside the allowed range [{lo}, {hi}]"
                                  + _by_how_much(value, lo, hi))
            return value

        def need_float(name: str, lo: float, hi: float, lo_open: bool = False) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name}: expected a number in {'(' if lo_open else '['}"
                                  f"{lo}, {hi}], got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
                raise ConfigError(f"{name} = {value} is outside the allowed range "
                                  f"{'(' if lo_open else '['}{lo}, {hi}]")
            return value

        def need_shape(name: str, hi: int) -> tuple[int, int]:
            value = getattr(self, name)
            if (not isinstance(value, tuple) or len(value) != 2
                    or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
                raise ConfigError(f"{name}: expected two integers (rows, columns), got {value!r}")
            for v in value:
                if not 1 <= v <= hi:
                    raise ConfigError(f"{name} = {value}: each side must be in [1, {hi}]"
                                      + _by_how_much(v, 1, hi))
            return value

        hin, win = need_shape("input_shape", 1024)
        h, w = need_shape("cell_shape", 256)
        if not isinstance(self.edge, str) or self.edge not in EDGES:
            raise ConfigError(f"edge: expected one of {EDGES}, got {self.edge!r}")
        if self.edge == "wrap" and min(h, w) < 3:
            raise ConfigError(f"cell_shape = {self.cell_shape}: edge 'wrap' needs at least 3 "
                              f"cells on each side (a 3x3 neighbourhood must not meet itself); "
                              f"use edge 'clip' for thinner arrays")
        r = need_int("potential_radius", 0, 7)
        if self.edge == "wrap" and 2 * r + 1 > min(hin, win):
            raise ConfigError(f"potential_radius = {r}: with edge 'wrap' the window side 2r+1 = "
                              f"{2 * r + 1} must not exceed the input side {min(hin, win)} "
                              f"(by {2 * r + 1 - min(hin, win)} too many); lower the radius")
        need_float("potential_pct", 0.0, 1.0, lo_open=True)
        if self.potential_counts_min < 1:
            raise ConfigError(f"potential_pct = {self.potential_pct} leaves some cell with no "
                              f"potential synapse; raise it or the radius")
        need_int("winners", 1, 9)
        need_float("boost_strength", 0.0, 32.0)
        need_int("seed", 0, 2**63 - 1)
        pb = need_int("perm_bits", 2, 16)
        pmax = (1 << pb) - 1
        thr = need_int("connected_threshold", 1, pmax)
        need_int("perm_inc", 0, pmax)
        need_int("perm_dec", 0, pmax)
        need_int("perm_bump", 0, pmax)
        need_float("init_connected_pct", 0.0, 1.0)
        spread = need_int("init_spread", 1, pmax)
        if spread > thr or thr + spread - 1 > pmax:
            raise ConfigError(f"init_spread = {spread}: initial permanences "
                              f"[threshold - spread, threshold + spread - 1] = "
                              f"[{thr - spread}, {thr + spread - 1}] must lie in [0, {pmax}]; "
                              f"the largest spread for this threshold is {min(thr, pmax - thr + 1)}")
        need_int("stimulus_threshold", 0, self.window_size)
        bb = need_int("boost_bits", 2, 16)
        need_int("boost_frac_bits", 0, bb - 1)
        db = need_int("duty_bits", 1, 24)
        need_int("boost_index_bits", 0, min(8, db))
        need_int("duty_period_log2", 0, db)
        need_float("min_overlap_duty_pct", 0.0, 1.0)

    # ------------------------------------------------------------------ derived values

    @property
    def window_side(self) -> int:
        """Side of the potential window, 2r+1."""
        return 2 * self.potential_radius + 1

    @property
    def window_size(self) -> int:
        """Synapse slots per cell: (2r+1)**2, one per window position, potential or not."""
        return self.window_side ** 2

    @property
    def num_cells(self) -> int:
        return self.cell_shape[0] * self.cell_shape[1]

    @property
    def num_inputs(self) -> int:
        return self.input_shape[0] * self.input_shape[1]

    @property
    def potential_q(self) -> int:
        """potential_pct quantised to FRACTION_BITS bits."""
        return _quantise(self.potential_pct, FRACTION_BITS)

    @property
    def init_connected_q(self) -> int:
        """init_connected_pct quantised to FRACTION_BITS bits."""
        return _quantise(self.init_connected_pct, FRACTION_BITS)

    @property
    def min_overlap_duty_q(self) -> int:
        """min_overlap_duty_pct quantised to MIN_DUTY_FRAC_BITS bits."""
        return _quantise(self.min_overlap_duty_pct, MIN_DUTY_FRAC_BITS)

    def pool_size(self, in_range: int) -> int:
        """Number of potential synapses of a cell whose window has `in_range` valid positions."""
        half = 1 << (FRACTION_BITS - 1)
        return (in_range * self.potential_q + half) >> FRACTION_BITS

    def in_range_counts(self) -> tuple[list[int], list[int]]:
        """Window rows (per cell row) and columns (per cell column) that fall inside the input.

        With edge 'wrap' every window position is in range.
        """
        side = self.window_side
        if self.edge == "wrap":
            return [side] * self.cell_shape[0], [side] * self.cell_shape[1]
        r = self.potential_radius
        out = []
        for n_cells, n_in in zip(self.cell_shape, self.input_shape):
            centres = [((2 * i + 1) * n_in) // (2 * n_cells) for i in range(n_cells)]
            out.append([sum(0 <= c + d < n_in for d in range(-r, r + 1)) for c in centres])
        return out[0], out[1]

    @property
    def potential_counts_min(self) -> int:
        """Pool size of the cell with the fewest in-range window positions."""
        rows, cols = self.in_range_counts()
        return self.pool_size(min(rows) * min(cols))

    @property
    def perm_max(self) -> int:
        return (1 << self.perm_bits) - 1

    @property
    def overlap_bits(self) -> int:
        """Width of an overlap count, 0 .. window_size."""
        return self.window_size.bit_length()

    @property
    def boost_one(self) -> int:
        """The boost factor 1.0 in fixed point."""
        return 1 << self.boost_frac_bits

    @property
    def boosted_bits(self) -> int:
        """Width of a boosted overlap, (overlap * boost) >> boost_frac_bits."""
        return max(1, ((self.window_size * ((1 << self.boost_bits) - 1)) >> self.boost_frac_bits)
                   .bit_length())

    @property
    def duty_one(self) -> int:
        """The duty cycle 1.0 in fixed point."""
        return 1 << self.duty_bits

    @property
    def duty_reg_bits(self) -> int:
        """Width of a duty-cycle register: values 0 .. 2**duty_bits inclusive."""
        return self.duty_bits + 1

    @property
    def boost_table(self) -> tuple[int, ...]:
        """The boost ROM: entry i + 2**q is round(exp(strength * i / 2**q) * 2**f), i in -2**q..2**q.

        Rounded half up, clamped to [1, 2**boost_bits - 1]. Computed once on the host; the golden
        model and the HDL both use exactly these integers.
        """
        q = self.boost_index_bits
        top = (1 << self.boost_bits) - 1
        table = []
        for i in range(-(1 << q), (1 << q) + 1):
            value = math.floor(math.exp(self.boost_strength * i / (1 << q)) * self.boost_one + 0.5)
            table.append(min(max(value, 1), top))
        return tuple(table)

    @property
    def hash(self) -> str:
        """A short stable hash of the config (hex), the identity a gateware build carries."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["cell_shape"] = list(self.cell_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SPConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "SPConfig":
        """Load a config from a JSON file path (or a JSON text starting with '{')."""
        if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
            text = path_or_text
        else:
            path = Path(path_or_text)
            if path.is_dir():
                raise ConfigError(f"config file {str(path)!r} is a folder; give an SPConfig "
                                  f"JSON file (`cellsp config` prints the default one)")
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read config file {str(path)!r}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "SPConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _by_how_much(value: int, lo: int, hi: int) -> str:
    if value < lo:
        return f" (short by {lo - value})"
    if value > hi:
        return f" (over by {value - hi})"
    return ""
