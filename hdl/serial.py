"""The serial cell array: each processing element walks the window once per cell, one synapse a
cycle, its cells served one after the other by one copy of the per-cell logic.

The sequencer only counts and broadcasts strobes; every decision about a cell (its overlap,
whether it wins, learns, or is weak, its boost) is taken inside its processing element from its
own state and its 8 neighbours' registers.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.golden import GoldenModel

from .array_base import (CellArrayBase, InputPlane, StepControl, SynapseMemories,
                         advance_counters, pe_kind)
from .pe import (FIELDS, Phase, ProcessingElement, neighbourhood_sizes, slot_shape,
                 synapse_ports)

__all__ = ["SerialCellArray"]


@dataclass
class PassPosition:
    """Where the serial sequencer is in a pass: `slot` (the cell every PE serves; P is the
    tail slot), `head` (the same, as wide as a PE's ``slot``), `t` (the cycle within the slot),
    `base` (the slot's first memory address, slot * N), and what it broadcasts to every PE:
    `strobes` (`Phase` -> its signal) and `boost_bit`."""
    slot: Signal
    head: Signal
    t: Signal
    base: Signal
    strobes: dict
    boost_bit: Signal


@dataclass
class StateWordCounters:
    """Where a state load or read-back is: the permanence words by (address `s`, memory `k`,
    `lane`), then the cells' words by (PE `q`, cell `l`, field `f`); `held` keeps one
    address's permanences for the read-back."""
    s: Signal
    k: Signal
    lane: Signal
    q: Signal
    l: Signal
    f: Signal
    held: Signal

    def all(self) -> list[Signal]:
        """The counters (not `held`)."""
        return [self.s, self.k, self.lane, self.q, self.l, self.f]


class SerialCellArray(CellArrayBase):
    """The cellular spatial pooler of SPEC.md with `ProcessingElement`s that serve their cells
    one after the other, bit-exact with `cellsp.sim.GoldenModel`; streams as `CellArrayBase`.

    Cycle by cycle, with N window slots, P cells per PE and B boost bits: the next input's
    beats are taken (one a cycle) into a shadow plane while the array works, and the last
    step's rows are sent while it goes on. A step costs 1 cycle to take the input, then a pass
    of P cell slots of L = max(N + 3, B + 1) cycles (max(L, 2^(q+1) + 2) when the previous step
    learned): in slot l every PE registers cell l's neighbourhood sum and maximum (1 cycle,
    `ProcessingElement.NEIGHBOURHOOD_LATENCY`), then reads its N permanences, one a cycle (the
    data arrive a cycle later; the previous learning step's updates are written back and counted
    with; each count is registered), tries cell l's boost thresholds, and from the slot's start
    multiplies cell l-1's overlap by its boost (B cycles);
    then B cycles for the last cell's product, P cycles of inhibition and 1 to publish the rows
    (which waits until the previous step's rows have been taken); a learning step adds P cycles
    for the duty cycles. Pending updates are written by a pass of their own before a command is
    taken. Initial permanences are the golden model's, baked into the memories.

    The row-wide array (`ArrayGeometry.row_scan`) is this array with N = S scan steps of a
    window row each (S synapses a PE a cycle, the plane rotating a row a step) and the boost
    table tried `boost_tries_per_cycle` thresholds a cycle: a slot of max(S + 3, B + 1,
    `boost_try_cycles` + 1) cycles.
    """

    @classmethod
    def make_pe(cls, geometry: ArrayGeometry, q: int) -> ProcessingElement:
        """PE q of the serial array for `geometry`."""
        return ProcessingElement(geometry.config, pe_kind(geometry, q),
                                 geometry.ring_positions, geometry.separable,
                                 geometry.ring_memory_min, geometry.scan_width,
                                 geometry.boost_tries_per_cycle)

    @classmethod
    def pe_signature(cls, geometry: ArrayGeometry, q: int):
        """The signature of PE q, without building the PE."""
        return ProcessingElement.ports(geometry.config, pe_kind(geometry, q),
                                       geometry.ring_positions, geometry.separable,
                                       geometry.scan_width, geometry.boost_tries_per_cycle)

    def elaborate(self, platform):
        g = self.geometry
        m = Module()
        P, N, B = g.cells_per_pe, g.scan_steps, g.config.boost_bits
        R = ProcessingElement.NEIGHBOURHOOD_LATENCY
        tries = g.boost_try_cycles
        at = PassPosition(slot=Signal(range(P + 1)), head=Signal(slot_shape(P)),
                          t=Signal(range(max(N + 2 + R, B + 1, tries + R))),
                          base=Signal(range(g.memory_depth + 1)),
                          strobes={p: Signal(name=f"do_{p.name.lower()}") for p in Phase},
                          boost_bit=Signal(range(g.config.boost_bits)))
        m.d.comb += at.head.eq(at.slot)
        self.add_pes(m, at.head)
        mems = SynapseMemories.build(m, g.fields, g.config.perm_bits, g.memory_depth,
                                     g.memory_words(GoldenModel(g.config).permanences),
                                     g.potential_words())
        plane, rows = self.input_plane(m), self.output_rows(m)
        ctl = self.step_control(m, plane, rows)
        self.feed_pes(m, mems, plane, at)
        self.broadcast(m, at)
        words = StateWordCounters(
            s=Signal(range(g.memory_depth + 1)), k=Signal(range(g.memories + 1)),
            lane=Signal(range(g.fields + 1)), q=Signal(range(g.num_pes + 1)),
            l=Signal(range(P + 1)), f=Signal(range(len(FIELDS))),
            held=Signal(g.fields * g.config.perm_bits * g.memories))
        strobes, slot = at.strobes, at.slot

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.sync += [at.t.eq(0), slot.eq(0), at.base.eq(0)]
                self.idle_state(m, ctl, plane, rows, "PASS", words.all())

            with m.State("PASS"):
                self.pass_cycle(m, at, ctl, mems, plane)

            with m.State("INHIBIT"):
                m.d.comb += [strobes[Phase.ROTATE].eq(1), strobes[Phase.INHIBIT].eq(1)]
                with m.If(slot == P - 1):
                    m.d.sync += slot.eq(0)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)

            with m.State("FINISH"):
                # the previous step's rows must be out before the buffer changes
                with m.If(~rows.pending):
                    rows.publish(m, Cat(*(pe.state.actives for pe in self.pes)),
                                 plane.now + 1 - ctl.start)
                    with m.If(ctl.learn):
                        m.next = "DUTY"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("DUTY"):
                m.d.comb += [strobes[Phase.ROTATE].eq(1), strobes[Phase.DUTY].eq(1)]
                with m.If(slot == P - 1):
                    # the permanence updates, weak flags and boosts wait for the next pass
                    m.d.sync += [slot.eq(0), ctl.pending.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)

            self.perm_word_states(m, words, mems)
            self.cell_word_states(m, words.q, words.l, words.f)
        return m

    def feed_pes(self, m: Module, mems: SynapseMemories, plane: InputPlane,
                 at: PassPosition) -> None:
        """Each PE's synapses: its head cell's input bits under the current scan step, and its
        fields of the memories' words."""
        g = self.geometry
        P, W, fields, pb = g.cells_per_pe, g.scan_width, g.fields, g.config.perm_bits
        for q, pe in enumerate(self.pes):
            k, lane = divmod(q, g.lanes)
            for b, syn in enumerate(synapse_ports(pe)):
                f = lane * W + b
                taps = [plane.current[g.row_taps[c][b]] for c in g.pe_cells(q)]
                m.d.comb += [
                    syn.tap.eq(taps[0] if P == 1 else Array(taps)[at.head]),
                    syn.prev_tap.eq(mems.pool_read[k].data[fields + f]),
                    syn.perm.eq(mems.perm_read[k].data[f * pb:(f + 1) * pb]),
                    syn.potential.eq(mems.pool_read[k].data[f])]

    def broadcast(self, m: Module, at: PassPosition) -> None:
        """The strobes, the boost bit, and the boost candidate and thresholds of the try at
        slot cycle t - R, to every PE."""
        g = self.geometry
        cfg = g.config
        R = ProcessingElement.NEIGHBOURHOOD_LATENCY
        T = g.boost_tries_per_cycle
        k_try = Signal(range(g.boost_try_cycles))     # tries j*T .. j*T + T-1 at try cycle j
        m.d.comb += k_try.eq(at.t - R)
        tb = ProcessingElement.threshold_bits(cfg)
        entries = len(cfg.boost_table)                 # 2^(q+1) + 1
        padded = g.boost_try_cycles * T
        # tries past the table's end never pass: their threshold is above every S
        unreachable = (1 << (tb - 1)) - 1

        def column(values, j, shape):
            return Array(Const(values[i * T + j], shape) for i in range(g.boost_try_cycles))[k_try]
        candidates = [column(list(cfg.boost_table) + [0] * (padded - entries), j,
                             cfg.boost_bits) for j in range(T)]
        thresholds = {size: [column(ProcessingElement.boost_thresholds(cfg, size)
                                    + [unreachable] * (padded - entries), j, signed(tb))
                             for j in range(T)]
                      for size in sorted(set(g.neighbourhood_size))}
        for pe, kind in zip(self.pes, self.pe_kinds):
            m.d.comb += [pe.phase.eq(Cat(*(at.strobes[p] for p in Phase))),
                         pe.boost_bit.eq(at.boost_bit)]
            if T == 1:
                m.d.comb += pe.boost_candidate.eq(candidates[0])
            else:
                m.d.comb += [pe.boost_candidate[j].eq(candidates[j]) for j in range(T)]
            sizes = sorted(set(neighbourhood_sizes(kind)))
            m.d.comb += [pe.boost_threshold[j * len(sizes) + i].eq(thresholds[size][j])
                         for j in range(T) for i, size in enumerate(sizes)]

    def pass_cycle(self, m: Module, at: PassPosition, ctl: StepControl, mems: SynapseMemories,
                   plane: InputPlane) -> None:
        """One cycle of the PASS state: a step's (counting; after the last cell's slot comes
        the tail slot, then INHIBIT) or a flush's (which ends with the last cell's slot)."""
        g = self.geometry
        P, N, B = g.cells_per_pe, g.scan_steps, g.config.boost_bits
        R = ProcessingElement.NEIGHBOURHOOD_LATENCY
        tries = g.boost_try_cycles
        slot, t, strobes = at.slot, at.t, at.strobes
        applying, counting = ctl.applying, ctl.counting
        forward = Array(Const(mv, 3) for mv in g.scan_moves)
        backward = Array(Const(mv, 3) for mv in g.scan_moves_reverse)
        slot_end = Mux(applying, max(N + 2 + R, B + 1, tries + R) - 1, max(N + 2 + R, B + 1) - 1)
        odd = slot[0] if P > 1 else Const(0)
        step = (t - R)[:len(t)]              # the read issued this cycle
        data = (t > R) & (t <= N + R)        # the read of the cycle before is on the ports
        data_index = (t - R - 1)[:len(t)]

        with m.If(slot < P):
            with m.If((t >= R) & (t < N + R)):
                m.d.comb += mems.addr.eq(at.base + Mux(odd, (N - 1 - step)[:len(t)], step))
            with m.If(data):
                m.d.comb += plane.move.eq(Mux(odd, backward[data_index], forward[data_index]))
                m.d.comb += strobes[Phase.COUNT].eq(counting)
                write_address = at.base + Mux(odd, (N - 1 - data_index)[:len(t)], data_index)
                self.write_back(m, at, mems, write_address, ctl)
            m.d.comb += strobes[Phase.TRY_BOOST].eq(applying & (t >= R) & (t < tries + R))
            self.multiply(m, at, (slot != 0) & counting)
            with m.If(t == slot_end):
                m.d.comb += [strobes[Phase.ROTATE].eq(1), strobes[Phase.STORE].eq(1)]
                m.d.sync += [t.eq(0), slot.eq(slot + 1), at.base.eq(at.base + N)]
                with m.If((slot == P - 1) & ~counting):
                    m.d.sync += [ctl.pending.eq(0), applying.eq(0)]
                    m.next = "IDLE"
            with m.Else():
                m.d.sync += t.eq(t + 1)
        with m.Else():
            # the tail slot: the last cell's product
            self.multiply(m, at, 1)
            with m.If(t == B - 1):
                m.d.sync += [t.eq(0), slot.eq(0), ctl.pending.eq(0), applying.eq(0)]
                m.next = "INHIBIT"
            with m.Else():
                m.d.sync += t.eq(t + 1)

    def write_back(self, m: Module, at: PassPosition, mems: SynapseMemories, write_address,
                   ctl: StepControl) -> None:
        """At a read's data: the input bits seen into the pool memories (when counting), and
        when applying, the previous step's learning (APPLY) into the permanence memories."""
        g = self.geometry
        fields, pb = g.fields, g.config.perm_bits
        for k, port in enumerate(mems.pool_write):
            seen = Cat(*(syn.tap for q in g.memory_pes(k)
                         for syn in synapse_ports(self.pes[q])))
            m.d.comb += [port.addr.eq(write_address), port.en.eq(ctl.counting),
                         port.data.eq(Cat(mems.pool_read[k].data[:fields], seen))]
        with m.If(ctl.applying):
            m.d.comb += at.strobes[Phase.APPLY].eq(1)
            for k, port in enumerate(mems.perm_write):
                m.d.comb += [port.addr.eq(write_address), port.en.eq(-1)]
                unused = Const(0, (fields - len(g.memory_pes(k)) * g.scan_width) * pb)
                m.d.comb += port.data.eq(Cat(*(syn.perm_next for q in g.memory_pes(k)
                                               for syn in synapse_ports(self.pes[q])),
                                             unused))

    def multiply(self, m: Module, at: PassPosition, enable) -> None:
        """The MULTIPLY strobes and the boost bit for slot cycle t < B, when `enable`."""
        B = self.geometry.config.boost_bits
        t = at.t
        with m.If(enable & (t < B)):
            m.d.comb += [at.strobes[Phase.MULTIPLY].eq(1),
                         at.strobes[Phase.MULTIPLY_FIRST].eq(t == 0),
                         at.strobes[Phase.MULTIPLY_LAST].eq(t == B - 1),
                         at.boost_bit.eq(t)]

    def perm_word_states(self, m: Module, words: StateWordCounters,
                         mems: SynapseMemories) -> None:
        """The LOAD_PERM, READ_ADDR, READ_HOLD and READ_PERM states of the sequencer's FSM
        (call inside it): the permanence words of a state load or read-back, then LOAD_CELL
        or READ_CELL."""
        g = self.geometry
        lanes, pb = g.fields, g.config.perm_bits          # the fields of a memory word

        def advance_perm_word(next_state):
            advance_counters(m, [(words.lane, lanes - 1), (words.k, g.memories - 1),
                                 (words.s, g.memory_depth - 1)], next_state)

        with m.State("LOAD_PERM"):
            m.d.comb += self.state_in.ready.eq(1)
            with m.If(self.state_in.valid):
                for k, port in enumerate(mems.perm_write):
                    m.d.comb += [port.addr.eq(words.s),
                                 port.data.eq(self.state_in.payload[:pb].replicate(lanes)),
                                 port.en.eq(Mux(words.k == k,
                                                (Const(1, lanes) << words.lane)[:lanes], 0))]
                advance_perm_word("LOAD_CELL")

        with m.State("READ_ADDR"):
            m.d.comb += mems.addr.eq(words.s)
            m.next = "READ_HOLD"

        with m.State("READ_HOLD"):
            m.d.sync += words.held.eq(Cat(*(port.data for port in mems.perm_read)))
            m.next = "READ_PERM"

        with m.State("READ_PERM"):
            # the held words shift out a field at a time (memory by memory, field by field):
            # each bit's source is its neighbour. A multiplexer over every field of every
            # memory drew all 1,792 bits of the row-wide 32x32 array to one place: router2's
            # most congested net there (BENCHMARKS.md section 3)
            m.d.comb += [self.state_out.valid.eq(1),
                         self.state_out.payload.eq(words.held[:pb])]
            with m.If(self.state_out.ready):
                m.d.sync += words.held.eq(words.held >> pb)
                with m.If((words.lane == lanes - 1) & (words.k == g.memories - 1)):
                    m.next = "READ_ADDR"
                advance_perm_word("READ_CELL")
