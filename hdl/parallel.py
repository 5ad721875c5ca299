"""The count-parallel cell array (`ArrayGeometry.parallel_count`): a PE counts the overlaps of
all P of its cells at once, one synapse of each a cycle, and runs its single copy of the
per-cell logic (weak test, boost, inhibition, duty cycles) once per cell in short passes of P
cycles around the scan.

The serial array (`hdl.array`) walks the window once per cell, so a PE's per-cell logic sits
beside every one of the P x N synapse reads; here it sits beside N reads for P cells. A
cycle-based simulator evaluates every gate every cycle, so that is the cost that matters in
Verilator: at 16x16 cells the count-parallel array takes about half the instructions an input
(BENCHMARKS.md). It costs P copies of the synapse path per PE, a multiplier and a boost search
per PE, so the boards keep the serial array.

Same SPEC, same streams, same state words (`ArrayGeometry.state_to_words`), same cell rings and
neighbour wiring as the serial array; a step is
  SCAN (N + 1 cycles, at least P): address s of every PE's permanence memory holds scan step s
    of its P cells; all P are counted at once, the previous step's learning and bumps written
    back. After a learning step its first P cycles also turn the active-duty and boost rings
    (only those: the lanes read the others in place): each cell in turn at their heads takes
    its new boost (SPEC 8, a binary search of the same thresholds the serial PE tries one by
    one) from its neighbourhood's updated active duties;
  POST (1 cycle): every cell's boosted overlap (one multiply each), and when learning its
    overlap duty (SPEC 7);
  INHIBIT (P): each cell in turn is inhibited (SPEC 5); when learning, its active duty is
    updated and its weak flag (SPEC 9) set from its neighbourhood's overlap duties, which POST
    has already updated; FINISH (1, publishes the rows).
"""

from __future__ import annotations

import numpy as np

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cellsp.sim.config import MIN_DUTY_FRAC_BITS, SPConfig

from .pe import (FIELDS, ProcessingElement, _Ring, _times, duty_next, head_inhibition,
                 head_neighbourhood, neighbour_masks, neighbour_ports, per_cell)

__all__ = ["ParallelPE", "elaborate_parallel"]

#: the strobes the sequencer broadcasts to every count-parallel PE
STROBES = ("count", "apply", "rotate", "prep", "store", "inhibit", "duty")


class ParallelPE(wiring.Component):
    """P cells, counted in parallel. Ports as `ProcessingElement`'s for the neighbour wiring,
    the rings' read-back and the loads; per lane l (cell l, the rings aligned): ``tap``,
    ``prev_tap``, ``potential``, ``perm`` and ``perm_next``. Strobes (`STROBES`): ``count``
    adds each lane's hit; ``apply`` writes back and counts ``perm_next``; ``prep`` turns the
    active-duty and boost rings only, the head's new boost entering the boost ring's tail;
    ``rotate`` turns every ring (with ``inhibit``, the head's active flag enters the tail; with
    ``duty`` its active duty and weak flag); ``store`` sets every cell's boosted overlap from
    its count (with ``duty``, its overlap duty) and clears the counts."""

    def __init__(self, config: SPConfig, kinds, positions=(0,), separable: bool = True):
        self.config = cfg = config
        self.kinds = kinds
        self.positions = tuple(positions)
        self.separable = separable
        self.size = P = len(kinds)
        self.neighbourhood_sizes = [1 + sum(present) for present, _ in kinds]
        self.sizes = sorted(set(self.neighbourhood_sizes))
        pb = cfg.perm_bits
        super().__init__({
            **{name: In(1) for name in STROBES},
            "slot": In(max(1, (P - 1).bit_length())),
            "tap": In(1).array(P),
            "prev_tap": In(1).array(P),
            "potential": In(1).array(P),
            "perm": In(pb).array(P),
            "perm_next": Out(pb).array(P),
            **neighbour_ports(cfg, P, self.positions, separable),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        P = self.size
        masks = neighbour_masks(self)

        def ring(name, width, init=0):
            return _Ring(name, width, P, init)
        bo, act = ring("boosted", cfg.boosted_bits), ring("active", 1)
        ad, od = ring("active_duty", cfg.duty_reg_bits), ring("overlap_duty", cfg.duty_reg_bits)
        boost = ring("boost", cfg.boost_bits, init=cfg.boost_one)
        weak = ring("weak", 1)

        for k, pos in enumerate(self.positions):
            m.d.comb += [self.boosted_at[k].eq(bo[pos]), self.active_duty_at[k].eq(ad[pos]),
                         self.overlap_duty_at[k].eq(od[pos])]
        m.d.comb += [self.active_duty.eq(ad[0]), self.overlap_duty.eq(od[0]),
                     self.boost.eq(boost[0]), self.actives.eq(Cat(*act))]

        # ---- the synapse lanes (SPEC 4 and 6): lane l is cell l, the rings aligned
        top = cfg.perm_max
        counters = [Signal(cfg.overlap_bits, name=f"count_{l}") for l in range(P)]
        for l in range(P):
            perm, pool = self.perm[l], self.potential[l]
            up = perm + cfg.perm_inc
            down = perm - cfg.perm_dec
            learned = Mux(pool & act[l],
                          Mux(self.prev_tap[l], Mux(up > top, top, up),
                              Mux(perm < cfg.perm_dec, 0, down)), perm)
            bumped = learned + cfg.perm_bump
            m.d.comb += self.perm_next[l].eq(
                Mux(pool & weak[l], Mux(bumped > top, top, bumped), learned))
            perm_now = Mux(self.apply, self.perm_next[l], perm)
            hit_now = self.count & pool & (perm_now >= cfg.connected_threshold) & self.tap[l]
            # an add, not a branch on the hit: a simulator's branch on random input bits
            # mispredicts about half the time
            m.d.sync += counters[l].eq(Mux(self.store, 0, counters[l] + hit_now))

        # ---- POST: every cell's boosted overlap (SPEC 4) at once, and when learning its
        # overlap duty (the weak flags of INHIBIT read them all)
        with m.If(self.store):
            for l in range(P):
                ov = Mux(counters[l] < cfg.stimulus_threshold, 0, counters[l])
                overlapped = counters[l] >= max(cfg.stimulus_threshold, 1)
                m.d.sync += bo[l].eq((ov * boost[l]) >> cfg.boost_frac_bits)
                with m.If(self.duty):
                    m.d.sync += od[l].eq(duty_next(m, cfg, od[l], overlapped))

        # ---- inhibition (SPEC 5) of the head cell
        active_now = head_inhibition(self, masks, bo[0])

        # ---- neighbourhood sum and maximum (SPEC 8, 9) of the head cell
        total, largest = head_neighbourhood(m, self, masks, ad[0], od[0])

        # ---- prep: the head cell's new boost (SPEC 8): the table entry of the largest k with
        # S = sum - m * duty >= U_k (`ProcessingElement.boost_thresholds`, non-decreasing in k),
        # found by a binary search
        tb = ProcessingElement.threshold_bits(cfg)
        entries = len(cfg.boost_table)                      # 2^(q+1) + 1
        which = (per_cell(self.slot, [self.sizes.index(n) for n in self.neighbourhood_sizes],
                          range(len(self.sizes))) if len(self.sizes) > 1 else 0)
        scaled = [_times(ad[0], n) for n in self.sizes]
        own = scaled[0] if len(self.sizes) == 1 else Array(scaled)[which]
        excess = Signal(signed(tb))
        m.d.comb += excess.eq(total - own)
        table = [Const(v, signed(tb)) for n in self.sizes
                 for v in ProcessingElement.boost_thresholds(cfg, n)]

        def threshold(k):
            return Array(table)[which * entries + k] if len(self.sizes) > 1 else Array(table)[k]
        found = Const(0, range(entries))
        step_size = (entries - 1) >> 1      # entries - 1 is a power of two
        index = Signal(range(entries))
        # the last entry first, then halves of 0 .. entries - 2
        last = excess >= threshold(entries - 1)
        while step_size:
            probe = found + step_size
            found = Mux(excess >= threshold(probe), probe, found)
            step_size >>= 1
        m.d.comb += index.eq(Mux(last, entries - 1, found))
        new_boost = Array(Const(v, cfg.boost_bits) for v in cfg.boost_table)[index]
        # ---- the head cell's weak flag (SPEC 9), set in INHIBIT from the updated overlap duties
        weak_now = (od[0] << MIN_DUTY_FRAC_BITS) < _times(largest, cfg.min_overlap_duty_q)

        # ---- the rings
        bo.rotate(m, self.rotate, bo[0])
        active = Mux(self.inhibit, active_now, act[0])
        act.rotate(m, self.rotate, active)
        weak.rotate(m, self.rotate, Mux(self.duty, weak_now, weak[0]))
        value = self.load_value
        f = FIELDS.index("active_duty")
        ad.rotate(m, self.rotate | self.prep | self.load[f] | self.unload[f],
                  Mux(self.load[f], value, Mux(self.duty, duty_next(m, cfg, ad[0], active), ad[0])))
        f = FIELDS.index("overlap_duty")
        od.rotate(m, self.rotate | self.load[f] | self.unload[f], Mux(self.load[f], value, od[0]))
        f = FIELDS.index("boost")
        boost.rotate(m, self.rotate | self.prep | self.load[f] | self.unload[f],
                     Mux(self.load[f], value, Mux(self.prep, new_boost, boost[0])))
        return m


def elaborate_parallel(array, platform):
    """`CellArray.elaborate` for a count-parallel geometry (see the module's documentation)."""
    from cellsp.sim.golden import GoldenModel
    from cellsp.sim.layout import layout

    from .array import Command, advance_counters

    g = array.geometry
    cfg = g.config
    m = Module()
    h, w = cfg.cell_shape
    n = cfg.num_cells
    P = g.cells_per_pe
    N = g.scan_steps
    pb = cfg.perm_bits
    lanes = g.lanes                     # of the state words' order only
    pes = array.pes

    slot = Signal(range(P))
    array.add_pes(m, slot)

    # ---------------------------------------------------------------- memories: one per PE,
    # address s holding scan step s of its P cells (entry l = cell l)
    perm = np.asarray(GoldenModel(cfg).permanences).reshape(n, -1)
    potential = layout(cfg).potential.reshape(n, -1)
    slots = g.scan_slots
    mems = array.synapse_memories(
        m, P, pb, N,
        [[sum(int(perm[c, slots[s]]) << (l * pb) for l, c in enumerate(g.pe_cells(q)))
          for s in range(N)] for q in range(g.num_pes)],
        [[sum(int(potential[c, slots[s]]) << l for l, c in enumerate(g.pe_cells(q)))
          for s in range(N)] for q in range(g.num_pes)])
    addr, perm_read, perm_write = mems.addr, mems.perm_read, mems.perm_write
    pool_read, pool_write = mems.pool_read, mems.pool_write

    io = array.plane_and_streams(m)
    current, take_shadow, move = io.current, io.take_shadow, io.move
    loaded, out_pending, out_bits, row = io.loaded, io.out_pending, io.out_bits, io.row
    for q, pe in enumerate(pes):
        for l, c in enumerate(g.pe_cells(q)):
            m.d.comb += [pe.tap[l].eq(current[g.taps[c]]),
                         pe.prev_tap[l].eq(pool_read[q].data[P + l]),
                         pe.potential[l].eq(pool_read[q].data[l]),
                         pe.perm[l].eq(perm_read[q].data[l * pb:(l + 1) * pb])]

    strobes = {name: Signal(name=f"do_{name}") for name in STROBES}
    for pe in pes:
        m.d.comb += [getattr(pe, name).eq(sig) for name, sig in strobes.items()]

    learn = Signal()
    start = Signal(32)
    applying = Signal()
    counting = Signal()
    pending = Signal()
    idle = Signal()
    m.d.comb += array.busy.eq(~idle | loaded | out_pending | pending | (io.beats != 0))

    # state words: permanences by (address l*N + s, memory, lane) as in the serial array
    word_s = Signal(range(N))
    word_l = Signal(range(P))
    word_k = Signal(range(g.memories + 1))
    word_lane = Signal(range(lanes + 1))
    word_q = Signal(range(g.num_pes + 1))
    word_c = Signal(range(P + 1))
    word_f = Signal(range(len(FIELDS)))
    word_pe = Signal(range(g.memories * lanes + 1))
    m.d.comb += word_pe.eq(word_k * lanes + word_lane)

    def advance_perm_word(next_state):
        advance_counters(m, [(word_lane, lanes - 1), (word_k, g.memories - 1), (word_s, N - 1),
                             (word_l, P - 1)], next_state)

    def next_cell():
        """The next cell to the ring heads' slot (after the last, the first again)."""
        m.d.sync += slot.eq(Mux(slot == P - 1, 0, slot + 1))

    def turn_cells(then):
        """One cell a cycle at the ring heads; after the last, state `then`."""
        m.d.comb += strobes["rotate"].eq(1)
        next_cell()
        with m.If(slot == P - 1):
            m.next = then

    forward = Array(Const(mv, 3) for mv in g.scan_moves)
    scan_end = max(N, P - 1)            # the boosts' P cycles fit in the scan
    t = Signal(range(scan_end + 1))
    with m.FSM(init="IDLE"):
        with m.State("IDLE"):
            m.d.comb += idle.eq(1)
            m.d.comb += array.command.ready.eq(~loaded & ~(io.beats != 0) & ~out_pending
                                               & ~pending & ~array.inputs.valid)
            m.d.sync += [t.eq(0), slot.eq(0)]
            with m.If(loaded):
                m.d.comb += take_shadow.eq(1)
                m.d.sync += [loaded.eq(0), learn.eq(io.next_learn), start.eq(io.next_start),
                             applying.eq(pending), counting.eq(1)]
                m.next = "SCAN"
            with m.Elif(pending & array.command.valid):
                m.d.sync += [applying.eq(1), counting.eq(0)]
                m.next = "SCAN"
            with m.Elif(array.command.valid & array.command.ready):
                m.d.sync += [word_s.eq(0), word_l.eq(0), word_k.eq(0), word_lane.eq(0),
                             word_q.eq(0), word_c.eq(0), word_f.eq(0)]
                with m.If(array.command.payload == Command.LOAD_STATE):
                    m.next = "LOAD_PERM"
                with m.Else():
                    m.next = "READ_ADDR"

        with m.State("SCAN"):
            with m.If(t < N):
                m.d.comb += addr.eq(t)
            with m.If(applying & (t < P)):
                # after a learning step: the new boosts, one cell a cycle at the ring heads
                m.d.comb += strobes["prep"].eq(1)
                next_cell()
            with m.If((t != 0) & (t <= N)):
                index = (t - 1)[:len(t)]
                m.d.comb += [move.eq(forward[index]), strobes["count"].eq(counting)]
                for q, port in enumerate(pool_write):
                    seen = Cat(*(pes[q].tap[l] for l in range(P)))
                    m.d.comb += [port.addr.eq(index), port.en.eq(counting),
                                 port.data.eq(Cat(pool_read[q].data[:P], seen))]
                with m.If(applying):
                    m.d.comb += strobes["apply"].eq(1)
                    for q, port in enumerate(perm_write):
                        m.d.comb += [port.addr.eq(index), port.en.eq(-1),
                                     port.data.eq(Cat(*pes[q].perm_next))]
            with m.If(t == scan_end):
                m.d.sync += [t.eq(0), pending.eq(0), applying.eq(0)]
                with m.If(counting):
                    m.next = "POST"
                with m.Else():
                    m.next = "IDLE"
            with m.Else():
                m.d.sync += t.eq(t + 1)

        with m.State("POST"):
            m.d.comb += [strobes["store"].eq(1), strobes["duty"].eq(learn)]
            m.next = "INHIBIT"

        with m.State("INHIBIT"):
            # with a learning step's active duties (from the new active flags) and weak flags
            m.d.comb += [strobes["inhibit"].eq(1), strobes["duty"].eq(learn)]
            with m.If(learn & (slot == P - 1)):
                m.d.sync += pending.eq(1)
            turn_cells("FINISH")

        with m.State("FINISH"):
            with m.If(~out_pending):
                m.d.sync += [out_bits.eq(Cat(*(pe.actives for pe in pes))),
                             out_pending.eq(1), row.eq(0), io.out_cycles.eq(io.now + 1 - start)]
                m.next = "IDLE"

        with m.State("LOAD_PERM"):
            m.d.comb += array.state_in.ready.eq(1)
            with m.If(array.state_in.valid):
                for q, port in enumerate(perm_write):
                    m.d.comb += [port.addr.eq(word_s),
                                 port.data.eq(array.state_in.payload[:pb].replicate(P)),
                                 port.en.eq(Mux(word_pe == q, (Const(1, P) << word_l)[:P], 0))]
                advance_perm_word("LOAD_CELL")

        with m.State("READ_ADDR"):
            m.d.comb += addr.eq(word_s)
            m.next = "READ_PERM"

        with m.State("READ_PERM"):
            # the read ports go on showing address word_s's words (no copy held)
            m.d.comb += addr.eq(word_s)
            entries = Array(port.data[l * pb:(l + 1) * pb] for port in perm_read
                            for l in range(P))
            value = Mux(word_pe < g.num_pes, entries[word_pe * P + word_l], 0)
            m.d.comb += [array.state_out.valid.eq(1), array.state_out.payload.eq(value)]
            with m.If(array.state_out.ready):
                with m.If((word_lane == lanes - 1) & (word_k == g.memories - 1)):
                    m.next = "READ_ADDR"
                advance_perm_word("READ_CELL")

        array.cell_word_states(m, word_q, word_c, word_f)
    return m
