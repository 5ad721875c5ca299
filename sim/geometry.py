"""How the cell array lays an `SPConfig` out in hardware: pure Python, shared by the HDL, the
test benches and the host (which packs states into load words with it).

The input plane
    The input is held in an Hin x Win plane of registers that can rotate by one position in
    any of four directions. Cell (i, j) always reads ("taps") the register at its mapped input
    position (ci, cj). Rotating the plane therefore walks every cell through its window at the
    same time: at scan step s all cells see the input at the same offset (dy, dx) from their
    centre. The scan is a serpentine over the (2r+1) x (2r+1) window, so every step is a
    single one-position rotation. Under 'clip' a slot outside the input sees some wrapped bit,
    but such a slot is never in the potential pool, so the bit is never used.

Processing elements
    `cells_per_pe` (P) cells consecutive in raster order share one processing element (PE): PE
    q serves cells q*P .. q*P + P - 1. P divides the number of columns (a PE serves part of a
    row), or is a whole number of rows (a band of rows: few, long PEs for small devices). All
    PEs work on their l-th cell at the same time and walk the window once per cell, forward for
    even l and backward for odd l, so the plane never rewinds. P = 1 is one PE per cell.

    A PE keeps its cells' registers in rings, the served cell at position 0; the neighbour o
    of PE q's cell l, cell c', sits at ring position (c' mod P - l) mod P of PE c' // P, the
    same position whatever l is for most cells. `ring_positions` lists the positions that the
    neighbour wiring reads.

Memories
    Permanences are stored by scan step, not by slot: memory address l*N + s (N window slots)
    holds, for every PE, the permanence of its cell l's slot visited at scan step s. A memory
    holds `lanes` PEs side by side (one lane each, `perm_bits` wide), so one read returns the
    next synapse of `lanes` PEs in lockstep. The potential pools are a read-only memory of the
    same shape, one bit per lane.

Loading
    Input bits arrive in raster order, `input_width` a beat, through a shift chain threaded
    through the plane. The chain's order is chosen so that after the last beat the plane sits at
    scan step 0 (offset (-r, -r)) without any further move.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cellsp.sim.config import SPConfig
from cellsp.sim.golden import SPState
from cellsp.sim.layout import cell_centres, layout

__all__ = ["ArrayGeometry", "Move", "HardwareConfigError"]


class HardwareConfigError(ValueError):
    """The hardware parameters do not fit the config; the message names the parameter."""


class Move:
    """Plane rotations: the register at (Y, X) takes the value of its neighbour at ..."""
    NONE = 0
    DX_PLUS = 1   # (Y, X + 1): the taps then see offset dx + 1
    DX_MINUS = 2  # (Y, X - 1)
    DY_PLUS = 3   # (Y + 1, X)
    DY_MINUS = 4  # (Y - 1, X)

    INVERSE = {NONE: NONE, DX_PLUS: DX_MINUS, DX_MINUS: DX_PLUS, DY_PLUS: DY_MINUS,
               DY_MINUS: DY_PLUS}


@dataclass(frozen=True)
class ArrayGeometry:
    """Hardware layout of a config: scan order, taps, memories, state word order.

    config: the SP parameters. input_width: input bits per beat (must divide Hin * Win).
    lanes: processing elements per memory word. cells_per_pe: cells served by one processing
    element, one after the other (see `cells_per_pe_choices`). ring_memory_min: a run of at
    least this many ring entries that no neighbour reads is kept in block RAM instead of
    flip-flops (0: every ring in flip-flops); it changes the cost, never the result.
    parallel_count: the count-parallel array (`hdl.parallel`): each PE counts all its cells'
    overlaps at once, which a cycle-based simulator runs in about half the instructions; the
    results and the state words are the same.
    row_scan: the row-wide serial array: each PE reads a whole window row of its cell a cycle
    (`scan_width` = S synapses), so a cell takes S scan steps instead of S*S, and tries
    `boost_tries_per_cycle` boost thresholds a cycle; the results are the same, the state words
    come in another order (`fields` permanences a memory word).
    """

    config: SPConfig
    input_width: int = 16
    lanes: int = 4
    cells_per_pe: int = 1
    ring_memory_min: int = 0
    parallel_count: bool = False
    row_scan: bool = False

    def __post_init__(self):
        n_in = self.config.num_inputs
        if not isinstance(self.input_width, int) or not 1 <= self.input_width <= n_in \
                or n_in % self.input_width:
            raise HardwareConfigError(
                f"input_width = {self.input_width} must divide the {n_in} input bits "
                f"(Hin * Win); try {self.input_width_choices()[:6]}")
        columns = self.config.cell_shape[1]
        p = self.cells_per_pe
        if p not in self.cells_per_pe_choices():
            raise HardwareConfigError(
                f"cells_per_pe = {p} must divide the {columns} cell columns or be a whole "
                f"number of rows that divides the {self.config.num_cells} cells; try "
                f"{self.cells_per_pe_choices()}")
        if not isinstance(self.ring_memory_min, int) or self.ring_memory_min < 0:
            raise HardwareConfigError(f"ring_memory_min = {self.ring_memory_min} must be a "
                                      f"whole number (0: rings in flip-flops)")
        if self.parallel_count and self.ring_memory_min:
            raise HardwareConfigError(f"ring_memory_min = {self.ring_memory_min}: the "
                                      f"count-parallel array keeps its rings in flip-flops "
                                      f"(use 0, or parallel_count = False)")
        if self.parallel_count and self.row_scan:
            raise HardwareConfigError("row_scan is a kind of serial array: the count-parallel "
                                      "array (parallel_count) counts one slot a cycle")
        if not isinstance(self.lanes, int) or not 1 <= self.lanes <= self.num_pes:
            raise HardwareConfigError(f"lanes = {self.lanes} must be in [1, {self.num_pes}] "
                                      f"(the number of processing elements)")

    @classmethod
    def for_config(cls, config: SPConfig, input_width: int | None = None, lanes: int = 4,
                   cells_per_pe: int = 1, ring_memory_min: int = 0,
                   parallel_count: bool = False, row_scan: bool = False) -> "ArrayGeometry":
        """The geometry the simulators and the host use: one input row a beat by default, and
        at most as many lanes as there are processing elements."""
        if input_width is None:
            input_width = config.input_shape[1]
        pes = config.num_cells // cells_per_pe if isinstance(cells_per_pe, int) and \
            cells_per_pe >= 1 else 1
        return cls(config, input_width=input_width, lanes=min(lanes, max(pes, 1)),
                   cells_per_pe=cells_per_pe, ring_memory_min=ring_memory_min,
                   parallel_count=parallel_count, row_scan=row_scan)

    def cells_per_pe_choices(self) -> list[int]:
        """The P a config allows: a divisor of the columns (a PE serves part of a row), or a
        whole number of rows dividing the rows (a PE serves a band of rows)."""
        h, w = self.config.cell_shape
        return ([d for d in range(1, w + 1) if w % d == 0]
                + [k * w for k in range(2, h + 1) if h % k == 0])

    def input_width_choices(self) -> list[int]:
        n = self.config.num_inputs
        return [w for w in range(1, min(n, 64) + 1) if n % w == 0]

    # ------------------------------------------------------------------ sizes

    @property
    def beats_per_input(self) -> int:
        return self.config.num_inputs // self.input_width

    @property
    def scan_width(self) -> int:
        """Synapses a PE reads a cycle: a window row under `row_scan`, else one."""
        return self.config.window_side if self.row_scan else 1

    @property
    def scan_steps(self) -> int:
        """Reads per cell per pass: every window slot, or every window row under `row_scan`."""
        return self.config.window_size // self.scan_width

    @property
    def fields(self) -> int:
        """Permanences in a memory word: `scan_width` for each of its `lanes` PEs (field
        f = lane * scan_width + b is synapse b of lane f // scan_width)."""
        return self.lanes * self.scan_width

    @property
    def boost_tries_per_cycle(self) -> int:
        """Boost thresholds a serial PE tries a cycle: one, or under `row_scan` as many as
        it takes to try the whole table within a cell's scan (`scan_steps` + 2 cycles)."""
        if not self.row_scan:
            return 1
        return -(-len(self.config.boost_table) // (self.scan_steps + 2))

    @property
    def boost_try_cycles(self) -> int:
        """Cycles a serial PE takes to try the whole boost table."""
        return -(-len(self.config.boost_table) // self.boost_tries_per_cycle)

    @property
    def num_pes(self) -> int:
        return self.config.num_cells // self.cells_per_pe

    def pe_cells(self, q: int) -> list[int]:
        """Raster indices of PE q's cells, in the order it serves them."""
        return list(range(q * self.cells_per_pe, (q + 1) * self.cells_per_pe))

    @property
    def memories(self) -> int:
        return -(-self.num_pes // self.lanes)

    @property
    def memory_depth(self) -> int:
        return self.cells_per_pe * self.scan_steps

    def memory_pes(self, g: int) -> list[int]:
        """The PEs in memory g's lanes (the last memory may be partial)."""
        return list(range(g * self.lanes, min((g + 1) * self.lanes, self.num_pes)))

    # ------------------------------------------------------------------ the scan

    @cached_property
    def scan_slots(self) -> tuple[int, ...]:
        """Slot p = a*S + b visited at scan step s (serpentine: even rows left to right)."""
        side = self.config.window_side
        order = []
        for a in range(side):
            cols = range(side) if a % 2 == 0 else range(side - 1, -1, -1)
            order.extend(a * side + b for b in cols)
        return tuple(order)

    def step_slots(self, s: int) -> tuple[int, ...]:
        """The slots read at scan step s, synapse b first: `scan_slots[s]` alone, or window row
        s under `row_scan`."""
        if self.row_scan:
            side = self.config.window_side
            return tuple(s * side + b for b in range(side))
        return (self.scan_slots[s],)

    @cached_property
    def scan_moves(self) -> tuple[int, ...]:
        """Move taking the plane from scan step s to s+1 (NONE after the last step)."""
        side = self.config.window_side
        if self.row_scan:
            return (Move.DY_PLUS,) * (self.scan_steps - 1) + (Move.NONE,)
        moves = []
        for s in range(self.scan_steps):
            a, t = divmod(s, side)
            if s == self.scan_steps - 1:
                moves.append(Move.NONE)
            elif t < side - 1:
                moves.append(Move.DX_PLUS if a % 2 == 0 else Move.DX_MINUS)
            else:
                moves.append(Move.DY_PLUS)
        return tuple(moves)

    @cached_property
    def scan_moves_reverse(self) -> tuple[int, ...]:
        """Move taking the plane from scan step N-1-t to N-2-t (the backward walk of odd cells;
        NONE after the last)."""
        forward = self.scan_moves
        n = self.scan_steps
        return tuple(Move.INVERSE[forward[n - 2 - t]] for t in range(n - 1)) + (Move.NONE,)

    @cached_property
    def taps(self) -> tuple[int, ...]:
        """Plane register (flat Y*Win + X) read by each cell: its mapped input position."""
        cfg = self.config
        ci = cell_centres(cfg.cell_shape[0], cfg.input_shape[0])
        cj = cell_centres(cfg.cell_shape[1], cfg.input_shape[1])
        win = cfg.input_shape[1]
        return tuple(int(y * win + x) for y in ci for x in cj)

    @cached_property
    def row_taps(self) -> tuple[tuple[int, ...], ...]:
        """Plane registers read by each cell's `scan_width` synapses: its mapped input position
        and the `scan_width` - 1 to its right (modulo the plane's width)."""
        win = self.config.input_shape[1]
        return tuple(tuple(t - t % win + (t % win + b) % win for b in range(self.scan_width))
                     for t in self.taps)

    @cached_property
    def plane_start(self) -> tuple[int, ...]:
        """Input bit held by each plane register at scan step 0 (offset (-r, -r))."""
        hin, win = self.config.input_shape
        r = self.config.potential_radius
        return tuple(((y - r) % hin) * win + ((x - r) % win) for y in range(hin) for x in range(win))

    def chain_position(self, input_bit: int) -> int:
        """Shift-chain position (0 = first after the head) that input bit k reaches after the
        last beat: beat k // w is shifted (beats - 1 - k // w) more times by w positions."""
        w = self.input_width
        return (self.beats_per_input - 1 - input_bit // w) * w + input_bit % w

    # ------------------------------------------------------------------ neighbours

    @cached_property
    def neighbours(self) -> tuple[tuple[int | None, ...], ...]:
        """For each cell, its 8 neighbours' raster indices in NEIGHBOUR_OFFSETS order (None if
        absent under 'clip')."""
        nb = layout(self.config).neighbour_index
        n = self.config.num_cells
        return tuple(tuple(int(v) if v < n else None for v in nb[:, c]) for c in range(n))

    @cached_property
    def neighbourhood_size(self) -> tuple[int, ...]:
        return tuple(int(v) for v in layout(self.config).neighbourhood_size)

    def neighbour_source(self, q: int, l: int, o: int) -> tuple[int, int] | None:
        """(PE, ring position) holding neighbour o of PE q's cell l while the PEs serve their
        l-th cells (None when it does not exist)."""
        p = self.cells_per_pe
        other = self.neighbours[q * p + l][o]
        if other is None:
            return None
        return other // p, (other % p - l) % p

    @cached_property
    def ring_positions(self) -> tuple[int, ...]:
        """Ring positions (0 first) that the neighbour wiring reads from some PE."""
        found = {0}
        for q in range(self.num_pes):
            for l in range(self.cells_per_pe):
                for o in range(8):
                    src = self.neighbour_source(q, l, o)
                    if src is not None:
                        found.add(src[1])
        return (0,) + tuple(sorted(found - {0}))

    @property
    def separable(self) -> bool:
        """Whether the PEs serve parts of rows: then the cells above and below are always
        at position 0 of another PE, and the 3x3 duty sum and maximum are taken as row
        sums and maxima passed between vertical neighbours (otherwise each PE reads all 8
        neighbours' duties)."""
        return self.config.cell_shape[1] % self.cells_per_pe == 0

    # ------------------------------------------------------------------ memory contents

    def address_cell_slot(self, q: int, address: int, b: int = 0) -> tuple[int, int]:
        """(cell, slot) whose permanence PE q keeps at memory address l*N + s, synapse b."""
        cell, s = divmod(address, self.scan_steps)
        return q * self.cells_per_pe + cell, self.step_slots(s)[b]

    def field_cell_slot(self, g: int, address: int, f: int) -> tuple[int, int] | None:
        """(cell, slot) in field f of memory g's word at `address` (None past the last PE)."""
        lane, b = divmod(f, self.scan_width)
        pes = self.memory_pes(g)
        return self.address_cell_slot(pes[lane], address, b) if lane < len(pes) else None

    def _words(self, values: np.ndarray, bits: int) -> list[list[int]]:
        """words[g][address] for per-(cell, slot) values, field f in bits [f*bits, (f+1)*bits)."""
        words = []
        for g in range(self.memories):
            rows = []
            for address in range(self.memory_depth):
                word = 0
                for f in range(self.fields):
                    where = self.field_cell_slot(g, address, f)
                    if where is not None:
                        word |= int(values[where]) << (f * bits)
                rows.append(word)
            words.append(rows)
        return words

    def memory_words(self, permanences: np.ndarray) -> list[list[int]]:
        """Memory contents for permanences (H, W, window): words[g][address], field f in bits
        [f*perm_bits, (f+1)*perm_bits)."""
        cfg = self.config
        perm = np.asarray(permanences).reshape(cfg.num_cells, cfg.window_size)
        return self._words(perm, cfg.perm_bits)

    def potential_words(self) -> list[list[int]]:
        """Potential-pool ROM contents: words[g][address], bit f = field f's slot is potential."""
        return self._words(layout(self.config).potential, 1)

    # ------------------------------------------------------------------ state words

    @property
    def state_word_bits(self) -> int:
        cfg = self.config
        return max(cfg.perm_bits, cfg.duty_reg_bits, cfg.boost_bits)

    @property
    def state_words(self) -> int:
        """Words in a whole-state load or read-back."""
        return self.memories * self.memory_depth * self.fields + 3 * self.config.num_cells

    def state_to_words(self, state: SPState) -> list[int]:
        """The load/read-back word sequence of a state.

        First the permanences, memory address by address, memory by memory (g), field by field
        (`fields`; those past the last PE are 0); then, cell by cell in raster order, its active
        duty, overlap duty and boost factor.
        """
        cfg = self.config
        h, w = cfg.cell_shape
        for name, shape in (("permanences", (h, w, cfg.window_size)), ("active_duty", (h, w)),
                            ("overlap_duty", (h, w)), ("boost", (h, w))):
            got = np.shape(getattr(state, name))
            if got != shape:
                raise ValueError(f"the state's {name} has shape {got}, this array's config "
                                 f"{cfg.hash[:12]} needs {shape}: the state belongs to another "
                                 f"config; load one saved with this config")
        words: list[int] = []
        memory = self.memory_words(state.permanences)
        mask = (1 << cfg.perm_bits) - 1
        for a in range(self.memory_depth):
            for g in range(self.memories):
                for f in range(self.fields):
                    words.append((memory[g][a] >> (f * cfg.perm_bits)) & mask)
        ad = np.asarray(state.active_duty).reshape(-1)
        od = np.asarray(state.overlap_duty).reshape(-1)
        bo = np.asarray(state.boost).reshape(-1)
        for c in range(cfg.num_cells):
            words.extend((int(ad[c]), int(od[c]), int(bo[c])))
        return words

    def words_to_state(self, words) -> SPState:
        """Inverse of state_to_words."""
        cfg = self.config
        words = [int(w) for w in words]
        if len(words) != self.state_words:
            raise ValueError(f"a state is {self.state_words} words, got {len(words)}")
        n, window = cfg.num_cells, cfg.window_size
        perm = np.zeros((n, window), np.uint16)
        i = 0
        for a in range(self.memory_depth):
            for g in range(self.memories):
                for f in range(self.fields):
                    where = self.field_cell_slot(g, a, f)
                    if where is not None:
                        perm[where] = words[i]
                    i += 1
        rest = np.array(words[i:], np.int64).reshape(n, 3)
        h, w = cfg.cell_shape
        return SPState(permanences=perm.reshape(h, w, window),
                       active_duty=rest[:, 0].astype(np.uint32).reshape(h, w),
                       overlap_duty=rest[:, 1].astype(np.uint32).reshape(h, w),
                       boost=rest[:, 2].astype(np.uint16).reshape(h, w))
