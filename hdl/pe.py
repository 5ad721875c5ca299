"""A processing element (PE): SPEC.md sections 4-9 for `cells_per_pe` cells consecutive in
raster order (part of a row, or a band of whole rows), served one after the other, reading only
their own state and their 8 neighbours' registers.

Each per-cell register is a *ring* of P = `cells_per_pe` entries. Every PE works on its l-th cell
at the same time, and that cell's entry is at the head of every ring (position 0); when the
sequencer moves on to the next cell, all rings rotate by one and the head's (updated) value
enters the tail. So at any time the ring position of a cell is fixed relative to the cell being
served: the left neighbour is at the tail (position P-1) of this PE or of the PE to the left,
the right neighbour at position 1, the cells above and below at the heads of the PEs above and
below. A neighbour register is therefore a fixed wire (or a 2-way choice on l at a PE's ends),
never a bus, and the P cells share one copy of the arithmetic. In a band PE of W-column rows
the cells above and below are at positions P-W and W of the same PE (or of the next band), the
diagonals beside them (`ArrayGeometry.ring_positions`). Ring entries no neighbour reads may be
kept in block RAM (`_Ring`), which is what makes a one-PE array small.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.config import MIN_DUTY_FRAC_BITS, SPConfig

__all__ = ["ProcessingElement", "Phase", "FIELDS", "NeighbourSignature", "StateSignature",
           "SynapseSignature", "pe_rings", "ring_storage", "strobe", "synapse_ports"]

#: the per-cell state fields, in state-word order
FIELDS = ("active_duty", "overlap_duty", "boost")


class Phase(enum.Flag, shape=10):
    """What the sequencer asks every serial PE to do this cycle, one bit each (several may be
    set at once); the meaning of each is in `ProcessingElement`'s documentation."""
    COUNT = enum.auto()
    APPLY = enum.auto()
    ROTATE = enum.auto()
    STORE = enum.auto()
    INHIBIT = enum.auto()
    DUTY = enum.auto()
    TRY_BOOST = enum.auto()
    MULTIPLY = enum.auto()
    MULTIPLY_FIRST = enum.auto()
    MULTIPLY_LAST = enum.auto()


def strobe(phases, member):
    """The one bit of `member` (a `Phase` or another flag of strobes) in the flag signal
    `phases`."""
    return phases.as_value()[member.value.bit_length() - 1]


class SynapseSignature(wiring.Signature):
    """One synapse of one cell a cycle, from the processing element's side.

    Members
    -------
    tap : In(1)
        The cell's input bit under the synapse, for this input.
    prev_tap : In(1)
        The same for the previous input (what the previous step learned from).
    potential : In(1)
        Whether the synapse is in the cell's pool.
    perm : In(perm_bits)
        Its permanence, as the memory holds it.
    perm_next : Out(perm_bits)
        That permanence after the previous step's learning and bump (combinational).
    """

    def __init__(self, config: SPConfig):
        super().__init__({"tap": In(1), "prev_tap": In(1), "potential": In(1),
                          "perm": In(config.perm_bits), "perm_next": Out(config.perm_bits)})


class NeighbourSignature(wiring.Signature):
    """The links of a processing element (either kind) to the PEs that hold its head cell's
    neighbours, from the PE's side: the rings at `positions` (`ArrayGeometry.ring_positions`)
    out, the neighbours' values in. With `separable` (`ArrayGeometry.separable`) the 3x3 sum and
    maximum are taken in two passes: the left and right neighbours' duties, then the row results
    of the PEs above and below; otherwise all 8 neighbours' duties are read.

    Members
    -------
    boosted_at, active_duty_at, overlap_duty_at : Out(unsigned(...)).array(len(positions))
        The boosted-overlap and duty rings at `positions`.
    nb_boosted : In(unsigned(boosted_bits)).array(8)
        Neighbour o's boosted overlap (`NEIGHBOUR_OFFSETS` order).
    nb_active_duty, nb_overlap_duty : In(unsigned(duty_reg_bits)).array(2 or 8)
        The left and right neighbours' duties when `separable`, otherwise all 8 neighbours'.
    row_sum, row_max : Out(duty_reg_bits + 2), Out(duty_reg_bits)
        Only when `separable`: the active-duty sum and the largest overlap duty of the head cell
        and its left and right neighbours.
    nb_row_sum, nb_row_max : In(...).array(2)
        Only when `separable`: ``row_sum`` and ``row_max`` of the PEs above and below.
    """

    def __init__(self, config: SPConfig, positions, separable: bool):
        bo, du = config.boosted_bits, config.duty_reg_bits
        duties = 2 if separable else 8
        super().__init__({
            "boosted_at": Out(unsigned(bo)).array(len(positions)),
            "active_duty_at": Out(unsigned(du)).array(len(positions)),
            "overlap_duty_at": Out(unsigned(du)).array(len(positions)),
            "nb_boosted": In(unsigned(bo)).array(8),
            "nb_active_duty": In(unsigned(du)).array(duties),
            "nb_overlap_duty": In(unsigned(du)).array(duties),
            **({"row_sum": Out(du + 2), "row_max": Out(du),
                "nb_row_sum": In(unsigned(du + 2)).array(2),
                "nb_row_max": In(unsigned(du)).array(2)} if separable else {}),
        })


class StateSignature(wiring.Signature):
    """A processing element's cell state, word by word (`FIELDS`), from the PE's side.

    Members
    -------
    load, unload : In(len(FIELDS))
        One bit per field: rotate only that field's ring, the tail taking ``load_value`` (load)
        or the head (unload).
    load_value : In(max(duty_reg_bits, boost_bits))
        The word a load writes.
    active_duty, overlap_duty, boost : Out(...)
        The head cell's state (read-back).
    actives : Out(size)
        The active flags of cells 0..P-1 (valid when the rings are aligned, after a whole
        phase).
    """

    def __init__(self, config: SPConfig, size: int):
        du = config.duty_reg_bits
        super().__init__({
            "load": In(len(FIELDS)), "unload": In(len(FIELDS)),
            "load_value": In(max(du, config.boost_bits)),
            "active_duty": Out(du), "overlap_duty": Out(du), "boost": Out(config.boost_bits),
            "actives": Out(size),
        })


def _times(value, constant: int):
    """value * constant as a sum of shifted copies: adders, never a DSP block."""
    terms = [value << i for i in range(constant.bit_length()) if constant >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


def per_cell(slot, values, shape=1):
    """A per-cell constant for a PE's head cell (the one at `slot`): a constant, or a choice on
    `slot`."""
    if len(set(values)) == 1:
        return Const(values[0], shape)
    return Array(Const(v, shape) for v in values)[slot]


def duty_next(m, cfg: SPConfig, duty, flag):
    """SPEC 7: `duty` after a step with `flag`, as one add of a narrow signed step
    (flag * unit - (duty >> period))."""
    du, period = cfg.duty_reg_bits, cfg.duty_period_log2
    unit = 1 << (cfg.duty_bits - period)
    step = Signal(signed(max(du - period, unit.bit_length()) + 2))
    m.d.comb += step.eq(Mux(flag, unit, 0) - (duty >> period))
    return (duty + step)[:du]


def neighbourhood_sizes(kinds) -> list[int]:
    """The number of cells in each cell's 3x3 neighbourhood (itself included), for a PE of
    cells of `kinds` (see `ProcessingElement`)."""
    return [1 + sum(present) for present, _ in kinds]


def slot_shape(size: int) -> int:
    """Width of a PE's ``slot`` port for `size` cells."""
    return max(1, (size - 1).bit_length())


def publish_state(m, pe, rings) -> None:
    """Drive a PE's ``links`` ring outputs and ``state`` read-back from its `rings` (name ->
    `_Ring`: boosted, active, active_duty, overlap_duty, boost)."""
    bo, act, boost = rings["boosted"], rings["active"], rings["boost"]
    ad, od = rings["active_duty"], rings["overlap_duty"]
    for k, pos in enumerate(pe.positions):
        m.d.comb += [pe.links.boosted_at[k].eq(bo[pos]),
                     pe.links.active_duty_at[k].eq(ad[pos]),
                     pe.links.overlap_duty_at[k].eq(od[pos])]
    m.d.comb += [pe.state.active_duty.eq(ad[0]), pe.state.overlap_duty.eq(od[0]),
                 pe.state.boost.eq(boost[0]), pe.state.actives.eq(Cat(*act))]


class ProcessingElement(wiring.Component):
    """P cells of one row: SPEC.md sections 4-9, driven by the array's sequencer.

    `kinds[l]` = (present, lower) of cell l: which of its 8 neighbours (NEIGHBOUR_OFFSETS order)
    exist, and which of them have the lower raster index (the tie goes to them).

    Ports (widths from the config): ``slot``, the cell l at the head of the rings (it selects
    the per-cell constants); ``synapse`` (`SynapseSignature`), the head cell's synapse under
    the current slot, or with `width` > 1 ``synapses``, the head cell's `width` synapses of
    the current scan step (a window row in the row-wide array); ``links``
    (`NeighbourSignature`); ``state`` (`StateSignature`); ``boost_candidate``,
    ``boost_threshold``, ``boost_bit`` (below; with `tries` > 1, `tries` candidates and
    thresholds a cycle); and ``phase``, the `Phase` strobes:

    - COUNT adds each synapse that is connected, potential and whose ``tap`` is 1;
    - APPLY: this cycle's ``perm`` is written back as ``perm_next`` (the previous step's
      learning and bump) and counted with that value;
    - ROTATE: every ring rotates, the head's value, updated by the strobes of this cycle,
      entering the tail: with STORE whether the counted overlap is positive after the stimulus
      threshold (the count itself is kept for the tail cell's product; the counter is cleared),
      with INHIBIT the inhibition result, with DUTY both updated duty cycles;
    - TRY_BOOST: the head's boost takes ``boost_candidate`` when S (= neighbourhood active-duty
      sum - m * duty) reaches ``boost_threshold`` (see `boost_thresholds`; of several tries a
      cycle, whose thresholds rise, the last one reached);
    - MULTIPLY (MULTIPLY_FIRST on the first cycle, MULTIPLY_LAST on the last): one
      add-and-shift step of overlap * boost for the *tail* cell with boost bit ``boost_bit``
      (from the bottom); the last writes its boosted overlap (product >> boost_frac_bits) into
      the tail.
    """

    #: cycles into a slot before the registered neighbourhood sum and maximum are valid: the
    #: boost tries start then, and the first permanence read (the weak flag needs one more)
    NEIGHBOURHOOD_LATENCY = 1

    def __init__(self, config: SPConfig, kinds: list[tuple[tuple[bool, ...], tuple[bool, ...]]],
                 positions: tuple[int, ...] = (0,), separable: bool = True,
                 ring_memory_min: int = 0, width: int = 1, tries: int = 1):
        """`positions`: the ring positions (0 first) shown to the neighbour wiring
        (`ArrayGeometry.ring_positions`); `separable`: see `ArrayGeometry.separable`;
        `ring_memory_min`: see `ArrayGeometry.ring_memory_min` (0: rings in flip-flops);
        `width`: synapses read a cycle (`ArrayGeometry.scan_width`); `tries`: boost thresholds
        tried a cycle (`ArrayGeometry.boost_tries_per_cycle`)."""
        self.ring_memory_min = ring_memory_min
        self.width, self.tries = width, tries
        self.config = config
        self.kinds = kinds
        self.positions = tuple(positions)
        self.separable = separable
        self.size = len(kinds)
        self.neighbourhood_sizes = neighbourhood_sizes(kinds)
        self.sizes = sorted(set(self.neighbourhood_sizes))
        super().__init__(self.ports(config, kinds, self.positions, separable, width, tries))

    @classmethod
    def ports(cls, config: SPConfig, kinds, positions, separable: bool, width: int = 1,
              tries: int = 1) -> wiring.Signature:
        """The signature of a PE of cells of `kinds` (the array builds it alone when it
        instantiates exported PE modules instead of PEs); `width` and `tries` as the PE's."""
        sizes = sorted(set(neighbourhood_sizes(kinds)))
        synapse = SynapseSignature(config)
        candidate = In(config.boost_bits)
        return wiring.Signature({
            "phase": In(Phase),
            "slot": In(slot_shape(len(kinds))),
            "boost_bit": In(range(config.boost_bits)),
            "boost_threshold": In(signed(cls.threshold_bits(config))).array(len(sizes) * tries),
            "boost_candidate": candidate if tries == 1 else candidate.array(tries),
            **({"synapse": Out(synapse)} if width == 1
               else {"synapses": Out(synapse).array(width)}),
            "links": Out(NeighbourSignature(config, positions, separable)),
            "state": Out(StateSignature(config, len(kinds))),
        })

    @staticmethod
    def threshold_bits(cfg: SPConfig) -> int:
        """Signed width of S = neighbourhood duty sum - m * duty, |S| <= 9 * 2^D."""
        return (9 << cfg.duty_bits).bit_length() + 2

    @staticmethod
    def boost_thresholds(cfg: SPConfig, m: int) -> list[int]:
        """Threshold k (k = 0 .. 2^(q+1)) on S = sum - m * duty for a cell whose neighbourhood
        has m cells: S >= U_k exactly when the SPEC 8 table index j >= k, i.e. when
        2 * (S + m * 2^D) >= (2k - 1) * m * 2^(D-q). U_0 admits every S."""
        d, q = cfg.duty_bits, cfg.boost_index_bits
        lowest = -(1 << (ProcessingElement.threshold_bits(cfg) - 1))
        out = [lowest]
        for k in range(1, (1 << (q + 1)) + 1):
            need = (2 * k - 1) * m * (1 << (d - q)) - m * (1 << (d + 1))   # bound on 2S
            out.append(-((-need) // 2))                                      # ceil(need / 2)
        return out

    def rings(self) -> dict[str, "_Ring"]:
        """The per-cell registers, each a ring of P entries (see `pe_rings`)."""
        return pe_rings(self.config, self.size, self.positions, self.ring_memory_min)

    def ring_storage(self) -> tuple[int, list[tuple[int, int]]]:
        """(flip-flop bits of the rings, (width, depth) of each run of ring entries in memory)."""
        return ring_storage(self.config, self.size, self.positions, self.ring_memory_min)

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        masks = neighbour_masks(self)
        rings = self.rings()
        publish_state(m, self, rings)
        hit = rings["overlapped"]             # overlap > 0 after the stimulus threshold
        bo, act, boost = rings["boosted"], rings["active"], rings["boost"]
        ad, od = rings["active_duty"], rings["overlap_duty"]

        counted, last = self.count_overlap(m)
        boosted_next = self.multiply_tail(m, last, boost[-1])
        # ---- inhibition (SPEC 5) and duty cycles (SPEC 7) of the head cell
        active_now = head_inhibition(self, masks, bo[0])
        ad_next = duty_next(m, cfg, ad[0], act[0])
        od_next = duty_next(m, cfg, od[0], hit[0])
        total, largest = self.registered_neighbourhood(m, masks, ad[0], od[0])
        boost_head = self.try_boost(m, total, ad[0], boost[0])

        # ---- weak (SPEC 9) head cell, from its neighbourhood's overlap duties. Registered (one
        # cycle after the maximum): the bump would otherwise put the maximum's scaling and test
        # on the path through the learning add and the count; the first read's data arrive
        # `NEIGHBOURHOOD_LATENCY` + 1 cycles into the slot, when the flag is valid
        weak = Signal()
        m.d.sync += weak.eq((od[0] << MIN_DUTY_FRAC_BITS)
                            < _times(largest, cfg.min_overlap_duty_q))
        self.learn_and_bump(m, act[0], weak)

        # ---- the rings (each `rotate` returns the `Else` of its turn, for writes in place)
        rotate, store = strobe(self.phase, Phase.ROTATE), strobe(self.phase, Phase.STORE)
        hit.rotate(m, rotate, Mux(store, counted >= max(cfg.stimulus_threshold, 1), hit[0]))
        with bo.rotate(m, rotate, bo[0]):
            with m.If(strobe(self.phase, Phase.MULTIPLY)
                      & strobe(self.phase, Phase.MULTIPLY_LAST)):
                m.d.sync += bo[-1].eq(boosted_next)
        act.rotate(m, rotate, Mux(strobe(self.phase, Phase.INHIBIT), active_now, act[0]))
        load, unload, value = self.state.load, self.state.unload, self.state.load_value
        for f, (ring, updated) in enumerate(((ad, ad_next), (od, od_next))):
            turn = rotate | load[f] | unload[f]
            tail = Mux(load[f], value,
                       Mux(rotate & strobe(self.phase, Phase.DUTY), updated, ring[0]))
            ring.rotate(m, turn, tail)
        f = FIELDS.index("boost")
        with boost.rotate(m, rotate | load[f] | unload[f], Mux(load[f], value, boost_head)):
            m.d.sync += boost[0].eq(boost_head)
        return m

    def count_overlap(self, m: Module):
        """SPEC 4 for the head cell: count connected potential synapses on active inputs (while
        the previous step's learning is applied to a synapse, count with it). Returns the count
        including this cycle's hit, and the register that keeps it at STORE for the tail
        cell's product."""
        cfg = self.config
        counter = Signal(cfg.overlap_bits)
        # each slot's hit is registered before it is added: the permanence memory's output,
        # the learning and bump adds and the threshold would otherwise lie on one path with
        # the counter's add and the stimulus test (the clock's longest path on the ECP5);
        # the sequencer gives every slot a cycle more for the last one
        hits = []
        for b, syn in enumerate(synapse_ports(self)):
            perm_now = Mux(strobe(self.phase, Phase.APPLY), syn.perm_next, syn.perm)
            connected = syn.potential & (perm_now >= cfg.connected_threshold)
            hit_now = Signal(name="hit_now" if self.width == 1 else f"hit_now_{b}")
            m.d.sync += hit_now.eq(strobe(self.phase, Phase.COUNT) & connected & syn.tap)
            hits.append(hit_now)
        counted = counter + _tree(hits, lambda x, y: x + y)
        store = strobe(self.phase, Phase.STORE)
        m.d.sync += counter.eq(Mux(store, 0, counted))
        last = Signal(cfg.overlap_bits)
        with m.If(store):
            m.d.sync += last.eq(counted)
        return counted, last

    def multiply_tail(self, m: Module, last, tail_boost):
        """The tail cell's boosted overlap (its overlap `last`), overlap * boost by add and
        shift, one boost bit a cycle from the bottom; returns (overlap * boost) >>
        boost_frac_bits after this cycle's step. The accumulator is as wide as the overlap:
        each cycle its lowest bit is final and moves into `low`, which keeps the top B - f of
        them."""
        cfg = self.config
        tail_ov = Mux(last < cfg.stimulus_threshold, 0, last)
        acc = Signal(cfg.overlap_bits)
        low = Signal(cfg.boost_bits - cfg.boost_frac_bits)
        total = (Mux(strobe(self.phase, Phase.MULTIPLY_FIRST), 0, acc)
                 + Mux(tail_boost.bit_select(self.boost_bit, 1), tail_ov, 0))
        acc_next, low_next = total[1:], Cat(low[1:], total[0])
        with m.If(strobe(self.phase, Phase.MULTIPLY)):
            m.d.sync += [acc.eq(acc_next), low.eq(low_next)]
        return Cat(low_next, acc_next)

    def registered_neighbourhood(self, m: Module, masks, active_duty, overlap_duty):
        """SPEC 8 and 9: the head cell's neighbourhood sum and maximum, registered: their inputs
        (rings, and the row results of the PEs above and below) hold for a slot, and the
        longest path would otherwise run through two PEs' comparisons into the boost and weak
        tests. They are valid `NEIGHBOURHOOD_LATENCY` cycles into a slot (the sequencer waits
        for them)."""
        total, largest = head_neighbourhood(m, self, masks, active_duty, overlap_duty)
        total_r = Signal(len(total), name="nb_total")
        largest_r = Signal(len(largest), name="nb_largest")
        m.d.sync += [total_r.eq(total), largest_r.eq(largest)]
        return total_r, largest_r

    def try_boost(self, m: Module, total, active_duty, boost):
        """SPEC 8: the head cell's boost after this cycle's try, S = sum - m * duty against the
        threshold (``boost_candidate`` when it is reached during TRY_BOOST)."""
        n_index = [self.sizes.index(n) for n in self.neighbourhood_sizes]
        scaled = [_times(active_duty, n) for n in self.sizes]
        k = len(self.sizes)
        thresholds = list(self.boost_threshold)
        if k == 1:
            own = scaled[0]
        else:
            which = per_cell(self.slot, n_index, range(k))
            own = Array(scaled)[which]
        excess = Signal(signed(self.threshold_bits(self.config)))
        m.d.comb += excess.eq(total - own)
        candidates = [self.boost_candidate] if self.tries == 1 else list(self.boost_candidate)
        # the thresholds of a cycle's tries rise with j: the last one reached wins
        for j, candidate in enumerate(candidates):
            mine = thresholds[j * k:(j + 1) * k]
            threshold = mine[0] if k == 1 else Array(mine)[which]
            boost = Mux(strobe(self.phase, Phase.TRY_BOOST) & (excess >= threshold),
                        candidate, boost)
        return boost

    def learn_and_bump(self, m: Module, active, weak) -> None:
        """SPEC 6, stages 4 and 7 of the previous step, on the synapse being read: drives
        ``perm_next``. `active` and the duties are that step's, ``prev_tap`` its input bit (each
        a single add of a small signed amount, then a clamp; synapses outside the pool get
        amount 0 and keep their value)."""
        for b, syn in enumerate(synapse_ports(self)):
            self.learn_and_bump_synapse(m, syn, active, weak,
                                        "" if self.width == 1 else f"_{b}")

    def learn_and_bump_synapse(self, m: Module, syn, active, weak, suffix: str) -> None:
        """`learn_and_bump` for one synapse `syn` (its signals' names end in `suffix`)."""
        cfg = self.config
        top = cfg.perm_max
        pb = cfg.perm_bits
        change = Signal(signed(pb + 2), name=f"change{suffix}")
        m.d.comb += change.eq(Mux(syn.potential & active,
                                  Mux(syn.prev_tap, cfg.perm_inc, -cfg.perm_dec), 0))
        learned_sum = Signal(signed(pb + 3), name=f"learned_sum{suffix}")
        m.d.comb += learned_sum.eq(syn.perm + change)
        learned = Mux(learned_sum < 0, 0, Mux(learned_sum > top, top, learned_sum[:pb]))
        bumped_sum = Signal(pb + 1, name=f"bumped_sum{suffix}")
        m.d.comb += bumped_sum.eq(learned + Mux(syn.potential & weak, cfg.perm_bump, 0))
        m.d.comb += syn.perm_next.eq(Mux(bumped_sum > top, top, bumped_sum[:pb]))


def pe_rings(config: SPConfig, size: int, positions=(0,),
             ring_memory_min: int = 0) -> dict[str, "_Ring"]:
    """The per-cell registers of a `ProcessingElement` of `size` cells, each a ring of `size`
    entries: name -> `_Ring` (with the positions read or written in place, so that the others
    may be kept in memory; `positions` and `ring_memory_min` as the PE's)."""
    du = config.duty_reg_bits
    positions = tuple(positions)

    def ring(name, width, init=0, taps=None):
        return _Ring(name, width, size, init, None if taps is None else (taps, ring_memory_min))
    return {r.name: r for r in [
        ring("overlapped", 1),
        ring("boosted", config.boosted_bits, taps=positions + (-1,)),
        ring("active", 1),                   # all entries: the `actives` output
        ring("active_duty", du, taps=positions),
        ring("overlap_duty", du, taps=positions),
        ring("boost", config.boost_bits, init=config.boost_one, taps=(0, -1)),
    ]}


def ring_storage(config: SPConfig, size: int, positions=(0,),
                 ring_memory_min: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """(flip-flop bits of the rings of a `ProcessingElement` of `size` cells, (width, depth) of
    each run of ring entries in memory), without building the PE."""
    rings = pe_rings(config, size, positions, ring_memory_min).values()
    return (sum(r.width * len(r.kept) for r in rings),
            [(r.width, depth) for r in rings for _, depth in r.segments])


def synapse_ports(pe) -> list:
    """The synapse ports of a PE of either kind, or of the stand-in of an exported one: its
    ``synapse``, or its ``synapses`` (a row-wide PE's window row, b = 0 .. width - 1; a
    count-parallel PE's cells)."""
    return [pe.synapse] if "synapse" in pe.signature.members else list(pe.synapses)


def neighbour_masks(pe) -> tuple[list, list, list[bool]]:
    """(present, lower, never) for a PE's head cell and each neighbour o: whether it exists
    and whether it has the lower raster index (per-cell constants chosen on `slot`), and
    whether it is absent for every cell of the PE."""
    present = [per_cell(pe.slot, [kind[0][o] for kind in pe.kinds]) for o in range(8)]
    lower = [per_cell(pe.slot, [kind[1][o] for kind in pe.kinds]) for o in range(8)]
    never = [not any(kind[0][o] for kind in pe.kinds) for o in range(8)]
    return present, lower, never


def head_inhibition(pe, masks, boosted):
    """SPEC 5 for a PE's head cell with boosted overlap `boosted`: whether it is active, from
    how many of its neighbours (``nb_boosted``) beat it."""
    present, lower, never = masks
    beats = []
    for o in range(8):
        if never[o]:
            continue
        other = pe.links.nb_boosted[o]
        ties = {kind[1][o] for kind in pe.kinds if kind[0][o]}
        if ties == {True}:
            beats.append(present[o] & (other >= boosted))
        elif ties == {False}:
            beats.append(present[o] & (other > boosted))
        else:
            beats.append(present[o] & Mux(lower[o], other >= boosted, other > boosted))
    beaten = sum(beats) if beats else Const(0)
    return (boosted != 0) & (beaten < pe.config.winners)


def head_neighbourhood(m, pe, masks, active_duty, overlap_duty):
    """SPEC 8 and 9 for a PE's head cell: (sum of the active duties, largest overlap duty)
    over its neighbourhood, in two passes (rows, then the row results ``nb_row_sum`` /
    ``nb_row_max`` of the PEs above and below; drives ``row_sum`` / ``row_max``) when
    `pe.separable`, otherwise over all 8 neighbours' duties."""
    present, _, never = masks

    def sum_and_max(total, largest, sums, maxima, offsets):
        for k, o in enumerate(offsets):
            if never[o]:
                continue
            total = total + Mux(present[o], sums[k], 0)
            larger = present[o] & (maxima[k] > largest)
            largest = Mux(larger, maxima[k], largest)
        return total, largest

    if pe.separable:
        links = pe.links
        row_sum, row_max = sum_and_max(active_duty, overlap_duty, links.nb_active_duty,
                                       links.nb_overlap_duty, (3, 4))
        m.d.comb += [links.row_sum.eq(row_sum), links.row_max.eq(row_max)]
        return sum_and_max(links.row_sum, links.row_max, links.nb_row_sum, links.nb_row_max,
                           (1, 6))
    # balanced trees: 4 levels of adders and comparators instead of a chain of 8
    offsets = [o for o in range(8) if not never[o]]
    links = pe.links
    total = _tree([active_duty] + [Mux(present[o], links.nb_active_duty[o], 0)
                                   for o in offsets], lambda x, y: x + y)
    largest = _tree([overlap_duty] + [Mux(present[o], links.nb_overlap_duty[o], 0)
                                      for o in offsets], lambda x, y: Mux(x > y, x, y))
    return total, largest


def _tree(values, combine):
    """values combined pairwise, level by level (an associative `combine`)."""
    while len(values) > 1:
        values = [combine(*values[i:i + 2]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class _Ring:
    """A ring of `size` entries of `width` bits that rotates by one (entry i takes entry i+1,
    the last takes a new value).

    The entries in flip-flops are one wide register (entry i's bits side by side): the same
    flip-flops as separate registers, but one process, so a simulator moves them in a few word
    operations. With `memory` = (taps, least), the entries outside `taps` (positions read or
    written in place; 0 and size-1 always) that form runs of at least `least` are kept in
    memories instead (block RAM: a circular buffer per run, one read and one write per
    rotation, the next entry prefetched). Only the flip-flop entries can be indexed. A reset
    clears the flip-flops and the buffer pointers, not the memories' contents (like the
    permanences, they are whole again after a state load)."""

    def __init__(self, name, width, size, init=0, memory=None):
        self.name, self.width, self.size, self.init = name, width, size, init
        self.segments = []          # (first position, depth) of each run kept in memory
        stored = set(range(size))
        if memory is not None and memory[1]:
            taps, least = memory
            taps = {t % size for t in taps} | {0, size - 1}
            run = []
            for i in range(size):
                if i not in taps:
                    run.append(i)
                    continue
                if len(run) >= least:
                    self.segments.append((run[0], len(run)))
                    stored -= set(run)
                run = []
        self.kept = sorted(stored)
        whole = Signal(width * len(self.kept), name=name,
                       init=sum(init << (k * width) for k in range(len(self.kept))))
        self._entries = {pos: whole[k * width:(k + 1) * width] for k, pos in enumerate(self.kept)}

    def __getitem__(self, i):
        return self._entries[i % self.size]

    def __iter__(self):
        return (self[i] for i in range(self.size))

    def rotate(self, m, turn, tail):
        """Rotate when `turn`, the tail taking `tail`; returns `m.Else()` for in-place writes."""
        first_of = {}
        for k, (first, depth) in enumerate(self.segments):
            mem = Memory(shape=self.width, depth=depth, init=[self.init] * depth)
            m.submodules[f"{self.name}_run{k}"] = mem
            read, write = mem.read_port(), mem.write_port()
            at = Signal(range(depth), name=f"{self.name}_run{k}_at")   # the run's first entry
            after = Mux(at == depth - 1, 0, at + 1)
            # the read port holds the run's first entry; on a rotation it moves into the
            # flip-flop before the run, the entry after the run takes its place in memory
            m.d.comb += [read.addr.eq(Mux(turn, after, at)), write.addr.eq(at),
                         write.data.eq(self[first + depth]), write.en.eq(turn)]
            with m.If(turn):
                m.d.sync += at.eq(after)
            first_of[first] = read.data
        with m.If(turn):
            for pos in self.kept:
                if pos == self.size - 1:
                    source = tail
                elif pos + 1 in first_of:
                    source = first_of[pos + 1]
                else:
                    source = self[pos + 1]
                m.d.sync += self[pos].eq(source)
        return m.Else()
