"""The count-parallel cell array (`ArrayGeometry.parallel_count`): a PE counts the overlaps of
all P of its cells at once, one synapse of each a cycle, and runs its single copy of the
per-cell logic (weak test, boost, inhibition, duty cycles) once per cell in short passes of P
cycles around the scan.

The serial array (`hdl.serial`) walks the window once per cell, so a PE's per-cell logic sits
beside every one of the P x N synapse reads; here it sits beside N reads for P cells. A
cycle-based simulator evaluates every gate every cycle, so that is the cost that matters in
Verilator: at 16x16 cells the count-parallel array takes about half the instructions an input
(BENCHMARKS.md). It costs P copies of the synapse path per PE, a multiplier and a boost search
per PE, so the boards keep the serial array.

Same SPEC, same streams and state words (`hdl.array_base.CellArrayBase`), same cell rings and
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

from dataclasses import dataclass

import numpy as np

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from cellsp.sim.config import MIN_DUTY_FRAC_BITS, SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.golden import GoldenModel
from cellsp.sim.layout import layout

from .array_base import (CellArrayBase, InputPlane, StepControl, SynapseMemories,
                         advance_counters, pe_kind)
from .pe import (FIELDS, NeighbourSignature, ProcessingElement, StateSignature,
                 SynapseSignature, _Ring, _times, duty_next, head_inhibition, head_neighbourhood,
                 neighbour_masks, neighbourhood_sizes, per_cell, publish_state, slot_shape,
                 strobe)

__all__ = ["ParallelCellArray", "ParallelPE", "ParallelPhase"]


class ParallelPhase(enum.Flag, shape=7):
    """What the sequencer asks every count-parallel PE to do this cycle, one bit each (several
    may be set at once); the meaning of each is in `ParallelPE`'s documentation."""
    COUNT = enum.auto()
    APPLY = enum.auto()
    ROTATE = enum.auto()
    PREP = enum.auto()
    STORE = enum.auto()
    INHIBIT = enum.auto()
    DUTY = enum.auto()


class ParallelPE(wiring.Component):
    """P cells, counted in parallel. Ports: ``slot``, ``links`` (`NeighbourSignature`) and
    ``state`` (`StateSignature`) as `ProcessingElement`'s; ``synapses[l]``
    (`SynapseSignature`), the synapse of lane l (cell l, the rings aligned); ``phase``, the
    `ParallelPhase` strobes:

    - COUNT adds each lane's hit; APPLY writes back and counts ``perm_next``;
    - PREP turns the active-duty and boost rings only, the head's new boost entering the boost
      ring's tail;
    - ROTATE turns every ring (with INHIBIT, the head's active flag enters the tail; with DUTY
      its active duty and weak flag);
    - STORE sets every cell's boosted overlap from its count (with DUTY, its overlap duty) and
      clears the counts.
    """

    def __init__(self, config: SPConfig, kinds, positions=(0,), separable: bool = True):
        """`kinds`, `positions`, `separable`: as `ProcessingElement`'s."""
        self.config = config
        self.kinds = kinds
        self.positions = tuple(positions)
        self.separable = separable
        self.size = len(kinds)
        self.neighbourhood_sizes = neighbourhood_sizes(kinds)
        self.sizes = sorted(set(self.neighbourhood_sizes))
        super().__init__(self.ports(config, kinds, self.positions, separable))

    @staticmethod
    def ports(config: SPConfig, kinds, positions, separable: bool) -> wiring.Signature:
        """The signature of a count-parallel PE of cells of `kinds`."""
        return wiring.Signature({
            "phase": In(ParallelPhase),
            "slot": In(slot_shape(len(kinds))),
            "synapses": Out(SynapseSignature(config)).array(len(kinds)),
            "links": Out(NeighbourSignature(config, positions, separable)),
            "state": Out(StateSignature(config, len(kinds))),
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
        publish_state(m, self, {"boosted": bo, "active": act, "active_duty": ad,
                                "overlap_duty": od, "boost": boost})
        on = {p: strobe(self.phase, p) for p in ParallelPhase}

        counters = self.synapse_lanes(m, act, weak)
        # ---- POST: every cell's boosted overlap (SPEC 4) at once, and when learning its
        # overlap duty (the weak flags of INHIBIT read them all)
        with m.If(on[ParallelPhase.STORE]):
            for l in range(P):
                ov = Mux(counters[l] < cfg.stimulus_threshold, 0, counters[l])
                overlapped = counters[l] >= max(cfg.stimulus_threshold, 1)
                m.d.sync += bo[l].eq((ov * boost[l]) >> cfg.boost_frac_bits)
                with m.If(on[ParallelPhase.DUTY]):
                    m.d.sync += od[l].eq(duty_next(m, cfg, od[l], overlapped))

        # ---- inhibition (SPEC 5), neighbourhood sum and maximum (SPEC 8, 9) of the head cell
        active_now = head_inhibition(self, masks, bo[0])
        total, largest = head_neighbourhood(m, self, masks, ad[0], od[0])
        new_boost = self.searched_boost(m, total, ad[0])
        # ---- the head cell's weak flag (SPEC 9), set in INHIBIT from the updated overlap duties
        weak_now = (od[0] << MIN_DUTY_FRAC_BITS) < _times(largest, cfg.min_overlap_duty_q)

        # ---- the rings
        rotate, prep = on[ParallelPhase.ROTATE], on[ParallelPhase.PREP]
        duty = on[ParallelPhase.DUTY]
        bo.rotate(m, rotate, bo[0])
        active = Mux(on[ParallelPhase.INHIBIT], active_now, act[0])
        act.rotate(m, rotate, active)
        weak.rotate(m, rotate, Mux(duty, weak_now, weak[0]))
        load, unload, value = self.state.load, self.state.unload, self.state.load_value
        f = FIELDS.index("active_duty")
        ad.rotate(m, rotate | prep | load[f] | unload[f],
                  Mux(load[f], value, Mux(duty, duty_next(m, cfg, ad[0], active), ad[0])))
        f = FIELDS.index("overlap_duty")
        od.rotate(m, rotate | load[f] | unload[f], Mux(load[f], value, od[0]))
        f = FIELDS.index("boost")
        boost.rotate(m, rotate | prep | load[f] | unload[f],
                     Mux(load[f], value, Mux(prep, new_boost, boost[0])))
        return m

    def synapse_lanes(self, m: Module, act, weak) -> list[Signal]:
        """SPEC 4 and 6 for every lane (lane l is cell l, the rings `act` and `weak` aligned):
        drives each ``perm_next``; returns the lanes' overlap counters."""
        cfg = self.config
        top = cfg.perm_max
        count = strobe(self.phase, ParallelPhase.COUNT)
        apply = strobe(self.phase, ParallelPhase.APPLY)
        store = strobe(self.phase, ParallelPhase.STORE)
        counters = [Signal(cfg.overlap_bits, name=f"count_{l}") for l in range(self.size)]
        for l, syn in enumerate(self.synapses):
            perm, pool = syn.perm, syn.potential
            up = perm + cfg.perm_inc
            down = perm - cfg.perm_dec
            learned = Mux(pool & act[l],
                          Mux(syn.prev_tap, Mux(up > top, top, up),
                              Mux(perm < cfg.perm_dec, 0, down)), perm)
            bumped = learned + cfg.perm_bump
            m.d.comb += syn.perm_next.eq(
                Mux(pool & weak[l], Mux(bumped > top, top, bumped), learned))
            perm_now = Mux(apply, syn.perm_next, perm)
            hit_now = count & pool & (perm_now >= cfg.connected_threshold) & syn.tap
            # an add, not a branch on the hit: a simulator's branch on random input bits
            # mispredicts about half the time
            m.d.sync += counters[l].eq(Mux(store, 0, counters[l] + hit_now))
        return counters

    def searched_boost(self, m: Module, total, active_duty):
        """The head cell's new boost (SPEC 8): the table entry of the largest k with
        S = sum - m * duty >= U_k (`ProcessingElement.boost_thresholds`, non-decreasing in k),
        found by a binary search."""
        cfg = self.config
        tb = ProcessingElement.threshold_bits(cfg)
        entries = len(cfg.boost_table)                      # 2^(q+1) + 1
        which = (per_cell(self.slot, [self.sizes.index(n) for n in self.neighbourhood_sizes],
                          range(len(self.sizes))) if len(self.sizes) > 1 else 0)
        scaled = [_times(active_duty, n) for n in self.sizes]
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
        return Array(Const(v, cfg.boost_bits) for v in cfg.boost_table)[index]


@dataclass
class StateWordCounters:
    """Where a state load or read-back is: the permanence words in the serial array's order,
    by (address l * N + s: cell `l`, scan step `s`; memory `k`, `lane`), `pe` being the PE
    (k * lanes + lane); then the cells' words by (PE `q`, cell `c`, field `f`)."""
    s: Signal
    l: Signal
    k: Signal
    lane: Signal
    q: Signal
    c: Signal
    f: Signal
    pe: Signal

    def all(self) -> list[Signal]:
        """The counters (not `pe`, which follows `k` and `lane`)."""
        return [self.s, self.l, self.k, self.lane, self.q, self.c, self.f]


class ParallelCellArray(CellArrayBase):
    """The cell array with `ParallelPE`s (see the module's documentation), bit-exact with
    `cellsp.sim.GoldenModel`; streams and state words as `CellArrayBase`."""

    @classmethod
    def make_pe(cls, geometry: ArrayGeometry, q: int) -> ParallelPE:
        """PE q of the count-parallel array for `geometry`."""
        return ParallelPE(geometry.config, pe_kind(geometry, q), geometry.ring_positions,
                          geometry.separable)

    @classmethod
    def pe_signature(cls, geometry: ArrayGeometry, q: int) -> wiring.Signature:
        """The signature of PE q, without building the PE."""
        return ParallelPE.ports(geometry.config, pe_kind(geometry, q), geometry.ring_positions,
                                geometry.separable)

    def synapse_memories(self, m: Module) -> SynapseMemories:
        """One permanence and one pool memory per PE, address s holding scan step s of its P
        cells (entry l = cell l)."""
        g = self.geometry
        cfg = g.config
        perm = np.asarray(GoldenModel(cfg).permanences).reshape(cfg.num_cells, -1)
        potential = layout(cfg).potential.reshape(cfg.num_cells, -1)
        slots = g.scan_slots
        N = g.scan_steps
        return SynapseMemories.build(
            m, g.cells_per_pe, cfg.perm_bits, N,
            [[sum(int(perm[c, slots[s]]) << (l * cfg.perm_bits)
                  for l, c in enumerate(g.pe_cells(q))) for s in range(N)]
             for q in range(g.num_pes)],
            [[sum(int(potential[c, slots[s]]) << l for l, c in enumerate(g.pe_cells(q)))
              for s in range(N)] for q in range(g.num_pes)])

    def elaborate(self, platform):
        g = self.geometry
        m = Module()
        P, N = g.cells_per_pe, g.scan_steps
        slot = Signal(range(P))
        self.add_pes(m, slot)
        mems = self.synapse_memories(m)
        plane, rows = self.input_plane(m), self.output_rows(m)
        ctl = self.step_control(m, plane, rows)
        pb = g.config.perm_bits
        for q, pe in enumerate(self.pes):
            for l, c in enumerate(g.pe_cells(q)):
                syn = pe.synapses[l]
                m.d.comb += [syn.tap.eq(plane.current[g.taps[c]]),
                             syn.prev_tap.eq(mems.pool_read[q].data[P + l]),
                             syn.potential.eq(mems.pool_read[q].data[l]),
                             syn.perm.eq(mems.perm_read[q].data[l * pb:(l + 1) * pb])]
        strobes = {p: Signal(name=f"do_{p.name.lower()}") for p in ParallelPhase}
        for pe in self.pes:
            m.d.comb += pe.phase.eq(Cat(*(strobes[p] for p in ParallelPhase)))
        words = StateWordCounters(
            s=Signal(range(N)), l=Signal(range(P)), k=Signal(range(g.memories + 1)),
            lane=Signal(range(g.lanes + 1)), q=Signal(range(g.num_pes + 1)),
            c=Signal(range(P + 1)), f=Signal(range(len(FIELDS))),
            pe=Signal(range(g.memories * g.lanes + 1)))
        m.d.comb += words.pe.eq(words.k * g.lanes + words.lane)

        def turn_cells(then):
            """One cell a cycle at the ring heads; after the last, state `then`."""
            m.d.comb += strobes[ParallelPhase.ROTATE].eq(1)
            m.d.sync += slot.eq(Mux(slot == P - 1, 0, slot + 1))
            with m.If(slot == P - 1):
                m.next = then

        scan_end = max(N, P - 1)            # the boosts' P cycles fit in the scan
        t = Signal(range(scan_end + 1))
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.sync += [t.eq(0), slot.eq(0)]
                self.idle_state(m, ctl, plane, rows, "SCAN", words.all())

            with m.State("SCAN"):
                self.scan_cycle(m, t, slot, strobes, ctl, mems, plane)

            with m.State("POST"):
                m.d.comb += [strobes[ParallelPhase.STORE].eq(1),
                             strobes[ParallelPhase.DUTY].eq(ctl.learn)]
                m.next = "INHIBIT"

            with m.State("INHIBIT"):
                # with a learning step's active duties (from the new active flags) and weak flags
                m.d.comb += [strobes[ParallelPhase.INHIBIT].eq(1),
                             strobes[ParallelPhase.DUTY].eq(ctl.learn)]
                with m.If(ctl.learn & (slot == P - 1)):
                    m.d.sync += ctl.pending.eq(1)
                turn_cells("FINISH")

            with m.State("FINISH"):
                with m.If(~rows.pending):
                    rows.publish(m, Cat(*(pe.state.actives for pe in self.pes)),
                                 plane.now + 1 - ctl.start)
                    m.next = "IDLE"

            self.perm_word_states(m, words, mems)
            self.cell_word_states(m, words.q, words.c, words.f)
        return m

    def scan_cycle(self, m: Module, t, slot, strobes, ctl: StepControl, mems: SynapseMemories,
                   plane: InputPlane) -> None:
        """One cycle of the SCAN state (cycle `t`): the reads, counts and write-backs of scan
        step t - 1, and after a learning step the new boosts of the first P cycles; then POST
        (a step) or IDLE (a flush)."""
        g = self.geometry
        P, N = g.cells_per_pe, g.scan_steps
        applying, counting = ctl.applying, ctl.counting
        forward = Array(Const(mv, 3) for mv in g.scan_moves)
        scan_end = max(N, P - 1)
        with m.If(t < N):
            m.d.comb += mems.addr.eq(t)
        with m.If(applying & (t < P)):
            # after a learning step: the new boosts, one cell a cycle at the ring heads
            m.d.comb += strobes[ParallelPhase.PREP].eq(1)
            m.d.sync += slot.eq(Mux(slot == P - 1, 0, slot + 1))
        with m.If((t != 0) & (t <= N)):
            index = (t - 1)[:len(t)]
            m.d.comb += [plane.move.eq(forward[index]),
                         strobes[ParallelPhase.COUNT].eq(counting)]
            for q, port in enumerate(mems.pool_write):
                seen = Cat(*(syn.tap for syn in self.pes[q].synapses))
                m.d.comb += [port.addr.eq(index), port.en.eq(counting),
                             port.data.eq(Cat(mems.pool_read[q].data[:P], seen))]
            with m.If(applying):
                m.d.comb += strobes[ParallelPhase.APPLY].eq(1)
                for q, port in enumerate(mems.perm_write):
                    m.d.comb += [port.addr.eq(index), port.en.eq(-1),
                                 port.data.eq(Cat(*(syn.perm_next
                                                    for syn in self.pes[q].synapses)))]
        with m.If(t == scan_end):
            m.d.sync += [t.eq(0), ctl.pending.eq(0), applying.eq(0)]
            with m.If(counting):
                m.next = "POST"
            with m.Else():
                m.next = "IDLE"
        with m.Else():
            m.d.sync += t.eq(t + 1)

    def perm_word_states(self, m: Module, words: StateWordCounters,
                         mems: SynapseMemories) -> None:
        """The LOAD_PERM, READ_ADDR and READ_PERM states of the sequencer's FSM (call inside
        it): the permanence words of a state load or read-back, then LOAD_CELL or READ_CELL."""
        g = self.geometry
        P, N, lanes, pb = g.cells_per_pe, g.scan_steps, g.lanes, g.config.perm_bits

        def advance_perm_word(next_state):
            advance_counters(m, [(words.lane, lanes - 1), (words.k, g.memories - 1),
                                 (words.s, N - 1), (words.l, P - 1)], next_state)

        with m.State("LOAD_PERM"):
            m.d.comb += self.state_in.ready.eq(1)
            with m.If(self.state_in.valid):
                for q, port in enumerate(mems.perm_write):
                    m.d.comb += [port.addr.eq(words.s),
                                 port.data.eq(self.state_in.payload[:pb].replicate(P)),
                                 port.en.eq(Mux(words.pe == q, (Const(1, P) << words.l)[:P], 0))]
                advance_perm_word("LOAD_CELL")

        with m.State("READ_ADDR"):
            m.d.comb += mems.addr.eq(words.s)
            m.next = "READ_PERM"

        with m.State("READ_PERM"):
            # the read ports go on showing address s's words (no copy held)
            m.d.comb += mems.addr.eq(words.s)
            entries = Array(port.data[l * pb:(l + 1) * pb] for port in mems.perm_read
                            for l in range(P))
            value = Mux(words.pe < g.num_pes, entries[words.pe * P + words.l], 0)
            m.d.comb += [self.state_out.valid.eq(1), self.state_out.payload.eq(value)]
            with m.If(self.state_out.ready):
                with m.If((words.lane == lanes - 1) & (words.k == g.memories - 1)):
                    m.next = "READ_ADDR"
                advance_perm_word("READ_CELL")
