"""One cell of the array: its overlap counter, its neighbour register, and the per-step updates
of SPEC.md that read only its own state and its 8 neighbours' registers."""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cellsp.sim.config import MIN_DUTY_FRAC_BITS, SPConfig

__all__ = ["Cell", "Phase"]


class Phase:
    """What the sequencer asks every cell to do this cycle (one-hot strobes, see Cell)."""
    names = ("clear", "count", "boost_overlap", "inhibit", "duty", "div_start", "div_step",
             "div_done", "learn")


def _sat_add(value, amount, top):
    total = value + amount
    return Mux(total > top, top, total)


def _sat_sub(value, amount):
    return Mux(value < amount, 0, value - amount)


class Cell(wiring.Component):
    """A cell: SPEC.md sections 4-9 for one column, driven by the array's sequencer.

    Ports (widths from the config):
      strobes ``clear, count, boost_overlap, inhibit, duty, div_start, div_step, div_done, learn``
      ``div_bit``: the quotient bit position of this division step (q+1 down to 0);
      ``tap``: the input bit under the current slot; ``potential`` and ``perm``: the slot's
      pool bit and permanence read from memory; ``perm_next``: the permanence to write back
      during a learning pass (valid the same cycle; combinational);
      ``nb_boosted``, ``nb_active_duty``, ``nb_overlap_duty``: the 8 neighbours' registers
      (NEIGHBOUR_OFFSETS order; an absent neighbour is tied to 0 and flagged in `present`);
      ``boosted``, ``active_duty``, ``overlap_duty``: this cell's neighbour register;
      ``active``: the inhibition result, valid from the cycle after ``inhibit``.

    Cycle by cycle: ``clear`` zeroes the overlap; each ``count`` adds one connected potential
    slot whose tap is 1; ``boost_overlap`` applies the stimulus threshold and registers the
    boosted overlap; ``inhibit`` registers ``active`` from the neighbours' boosted overlaps;
    ``duty`` updates both duty cycles; ``div_start`` registers the weak flag and loads the boost
    division; ``div_step`` (q+2 times) produces a quotient bit; ``div_done`` looks the boost up in
    the table; during ``learn`` the write-back value applies learning, then the bump.
    """

    def __init__(self, config: SPConfig, index: int, present: tuple[bool, ...],
                 lower: tuple[bool, ...]):
        self.config = cfg = config
        self.index = index
        self.present = present      # which of the 8 neighbours exist
        self.lower = lower          # neighbour has the lower raster index (tie goes to it)
        self.neighbourhood_size = 1 + sum(present)
        bo, du = cfg.boosted_bits, cfg.duty_reg_bits
        super().__init__({
            **{name: In(1) for name in Phase.names},
            "div_bit": In(range(cfg.boost_index_bits + 2)),
            "tap": In(1),
            "potential": In(1),
            "perm": In(cfg.perm_bits),
            "perm_next": Out(cfg.perm_bits),
            "nb_boosted": In(unsigned(bo)).array(8),
            "nb_active_duty": In(unsigned(du)).array(8),
            "nb_overlap_duty": In(unsigned(du)).array(8),
            "boosted": Out(bo),
            "active_duty": Out(du),
            "overlap_duty": Out(du),
            "boost": Out(cfg.boost_bits, init=cfg.boost_one),
            "overlap": Out(cfg.overlap_bits),
            "active": Out(1),
            "weak": Out(1),
            # state load: the sequencer writes duties and boost directly
            "load_active_duty": In(1), "load_overlap_duty": In(1), "load_boost": In(1),
            "load_value": In(max(du, cfg.boost_bits)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        d, q = cfg.duty_bits, cfg.boost_index_bits
        n = self.neighbourhood_size

        # ---- overlap (SPEC 4): count connected potential slots on active inputs
        connected = self.potential & (self.perm >= cfg.connected_threshold)
        with m.If(self.clear):
            m.d.sync += self.overlap.eq(0)
        with m.Elif(self.count & connected & self.tap):
            m.d.sync += self.overlap.eq(self.overlap + 1)

        overlap = Mux(self.overlap < cfg.stimulus_threshold, 0, self.overlap)
        with m.If(self.boost_overlap):
            m.d.sync += self.boosted.eq((overlap * self.boost) >> cfg.boost_frac_bits)

        # ---- inhibition (SPEC 5): count neighbours that beat this cell
        beats = []
        for o in range(8):
            if not self.present[o]:
                continue
            other = self.nb_boosted[o]
            if self.lower[o]:
                beats.append(other >= self.boosted)
            else:
                beats.append(other > self.boosted)
        beaten = sum(beats) if beats else Const(0)
        with m.If(self.inhibit):
            m.d.sync += self.active.eq((self.boosted != 0) & (beaten < cfg.winners))

        # ---- duty cycles (SPEC 7)
        period = cfg.duty_period_log2
        unit = 1 << (d - period)
        overlapped = self.overlap >= max(cfg.stimulus_threshold, 1)
        with m.If(self.duty):
            m.d.sync += [
                self.active_duty.eq(self.active_duty - (self.active_duty >> period)
                                    + Mux(self.active, unit, 0)),
                self.overlap_duty.eq(self.overlap_duty - (self.overlap_duty >> period)
                                     + Mux(overlapped, unit, 0)),
            ]

        # ---- boost (SPEC 8): index = floor((V * 2^(q+1) + n * 2^d) / (n * 2^(d+1))) with
        # V = neighbourhood sum + n * (2^d - duty) >= 0, by restoring division, one bit a step
        total = self.active_duty + sum(self.nb_active_duty[o] for o in range(8) if self.present[o])
        v = total + n * ((1 << d) - self.active_duty)
        numerator = (v << (q + 1)) + (n << d)
        divisor = n << (d + 1)
        remainder = Signal(len(numerator))
        quotient = Signal(q + 2)
        shifted = Array(Const(divisor << j) for j in range(q + 2))[self.div_bit]
        with m.If(self.div_start):
            m.d.sync += [remainder.eq(numerator), quotient.eq(0)]
        with m.Elif(self.div_step):
            with m.If(remainder >= shifted):
                m.d.sync += [remainder.eq(remainder - shifted),
                             quotient.eq(quotient | (Const(1, q + 2) << self.div_bit)[:q + 2])]
        table = Array(Const(v, cfg.boost_bits) for v in cfg.boost_table)
        with m.If(self.div_done):
            m.d.sync += self.boost.eq(table[quotient])

        # ---- weak cells (SPEC 9), from the updated overlap duties
        largest = self.overlap_duty
        for o in range(8):
            if self.present[o]:
                other = self.nb_overlap_duty[o]
                largest = Mux(other > largest, other, largest)
        with m.If(self.div_start):
            m.d.sync += self.weak.eq((self.overlap_duty << MIN_DUTY_FRAC_BITS)
                                     < largest * cfg.min_overlap_duty_q)

        # ---- learning and bump (SPEC 6, stages 4 and 7) on the slot being written back
        top = cfg.perm_max
        learned = Mux(self.active,
                      Mux(self.tap, _sat_add(self.perm, cfg.perm_inc, top),
                          _sat_sub(self.perm, cfg.perm_dec)),
                      self.perm)
        bumped = Mux(self.weak, _sat_add(learned, cfg.perm_bump, top), learned)
        m.d.comb += self.perm_next.eq(Mux(self.potential, bumped, self.perm))

        # ---- state load
        with m.If(self.load_active_duty):
            m.d.sync += self.active_duty.eq(self.load_value)
        with m.If(self.load_overlap_duty):
            m.d.sync += self.overlap_duty.eq(self.load_value)
        with m.If(self.load_boost):
            m.d.sync += self.boost.eq(self.load_value)
        return m

