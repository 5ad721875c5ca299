"""One cell of the array: its overlap counter, its neighbour register, and the per-step updates
of SPEC.md that read only its own state and its 8 neighbours' registers."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cellsp.sim.config import MIN_DUTY_FRAC_BITS, SPConfig

__all__ = ["Cell", "Phase", "FORWARD", "BACKWARD"]

#: NEIGHBOUR_OFFSETS indices of the forward neighbours (0,1), (1,-1), (1,0), (1,1), and of the
#: backward ones at the opposite offsets, pair by pair
FORWARD = (4, 5, 6, 7)
BACKWARD = (3, 2, 1, 0)


class Phase:
    """What the sequencer asks every cell to do this cycle (one-hot strobes, see Cell)."""
    names = ("clear", "count", "multiply", "inhibit", "duty", "boost_start", "boost_try",
             "apply")


def _sat_add(value, amount, top):
    total = value + amount
    return Mux(total > top, top, total)


def _sat_sub(value, amount):
    return Mux(value < amount, 0, value - amount)


def _times(value, constant: int):
    """value * constant as a sum of shifted copies: adders, never a DSP block."""
    terms = [value << i for i in range(constant.bit_length()) if constant >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


class Cell(wiring.Component):
    """A cell: SPEC.md sections 4-9 for one column, driven by the array's sequencer.

    Ports (widths from the config):
      strobes ``clear, count, multiply, inhibit, duty, boost_start, boost_try, apply``;
      ``boost_bit``: during ``multiply``, the boost bit to use (boost_bits-1 down to 0);
      ``boost_threshold``, ``boost_candidate``: during ``boost_try``, threshold k for this cell's
      neighbourhood size and boost table entry k (the sequencer steps k = 0 .. 2^(q+1));
      ``tap``: the input bit under the current slot; ``prev_tap``: the previous input's bit
      under it; ``potential`` and ``perm``: the slot's pool bit and permanence read from memory;
      ``perm_next``: the permanence after the previous step's learning and bump, written back
      while ``apply`` (combinational);
      ``nb_boosted``: the boosted overlaps of the 4 forward neighbours (FORWARD offsets);
      ``pair_result``: bit k = forward neighbour k beats this cell; ``pair_from_back``: bit k =
      the ``pair_result`` of backward neighbour k about this cell (so this cell beats it);
      ``nb_active_duty``, ``nb_overlap_duty``: the left and right neighbours' duties;
      ``nb_row_sum``, ``nb_row_max``: the up and down neighbours' ``row_sum``/``row_max``
      (absent neighbours are tied to 0 and flagged in `present`);
      ``boosted``, ``active_duty``, ``overlap_duty``: this cell's neighbour register;
      ``row_sum``, ``row_max``: sum of the active duties and largest overlap duty of this cell and
      its left and right neighbours (the 3x3 sum and maximum are separable, so each cell
      adds 2 + 2 values instead of 8);
      ``active``: the inhibition result, valid from the cycle after ``inhibit``.

    Cycle by cycle: ``clear`` zeroes the overlap; each ``count`` adds one connected potential
    slot whose tap is 1; ``multiply``, once per boost bit from the top, shifts the product left
    and adds the overlap (after the stimulus threshold) where that bit is set, so the product
    register holds overlap * boost, and ``boosted`` is it shifted right by boost_frac_bits;
    ``inhibit`` registers ``active`` from the neighbours' boosted overlaps;
    ``duty`` updates both duty cycles; ``boost_start`` registers the weak flag and S = sum -
    n * duty; each ``boost_try`` sets the boost to the candidate when S reaches the threshold,
    so after the last one the boost is table[j] with j the largest k whose threshold S reaches
    (see `boost_thresholds`). A learning step's permanence updates are applied during the next
    pass over the memory (``apply``): the write-back value applies learning, then the bump, and
    ``count`` uses it, as SPEC 6 orders (learning of step t before the overlaps of step t+1).
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
            "boost_bit": In(range(cfg.boost_bits)),
            "boost_threshold": In(signed(self.threshold_bits(cfg))),
            "boost_candidate": In(cfg.boost_bits),
            "tap": In(1),
            "prev_tap": In(1),
            "potential": In(1),
            "perm": In(cfg.perm_bits),
            "perm_next": Out(cfg.perm_bits),
            # forward neighbours' boosted overlaps; backward neighbours' pair comparisons
            "nb_boosted": In(unsigned(bo)).array(4),
            "pair_from_back": In(4),
            "pair_result": Out(4),
            # left and right neighbours' duties; up and down neighbours' row sums and maxima
            "nb_active_duty": In(unsigned(du)).array(2),
            "nb_overlap_duty": In(unsigned(du)).array(2),
            "nb_row_sum": In(unsigned(du + 2)).array(2),
            "nb_row_max": In(unsigned(du)).array(2),
            "boosted": Out(bo),
            "active_duty": Out(du),
            "overlap_duty": Out(du),
            "row_sum": Out(du + 2),
            "row_max": Out(du),
            "boost": Out(cfg.boost_bits, init=cfg.boost_one),
            "overlap": Out(cfg.overlap_bits),
            "active": Out(1),
            "weak": Out(1),
            # state load: the sequencer writes duties and boost directly
            "load_active_duty": In(1), "load_overlap_duty": In(1), "load_boost": In(1),
            "load_value": In(max(du, cfg.boost_bits)),
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
        lowest = -(1 << (Cell.threshold_bits(cfg) - 1))
        out = [lowest]
        for k in range(1, (1 << (q + 1)) + 1):
            need = (2 * k - 1) * m * (1 << (d - q)) - m * (1 << (d + 1))   # bound on 2S
            out.append(-((-need) // 2))                                      # ceil(need / 2)
        return out

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        d = cfg.duty_bits
        n = self.neighbourhood_size

        # ---- overlap (SPEC 4): count connected potential slots on active inputs
        # while the previous step's learning is applied to this slot, count with the result
        perm_now = Mux(self.apply, self.perm_next, self.perm)
        connected = self.potential & (perm_now >= cfg.connected_threshold)
        with m.If(self.clear):
            m.d.sync += self.overlap.eq(0)
        with m.Elif(self.count & connected & self.tap):
            m.d.sync += self.overlap.eq(self.overlap + 1)

        overlap = Mux(self.overlap < cfg.stimulus_threshold, 0, self.overlap)
        product = Signal(cfg.overlap_bits + cfg.boost_bits)
        with m.If(self.multiply):
            m.d.sync += product.eq((product << 1) + Mux(self.boost.bit_select(self.boost_bit, 1),
                                                        overlap, 0))
        with m.If(self.clear):
            m.d.sync += product.eq(0)
        m.d.comb += self.boosted.eq(product >> cfg.boost_frac_bits)

        # ---- inhibition (SPEC 5): count neighbours that beat this cell. Each pair of
        # neighbours is compared once, by the cell whose partner lies at a forward offset
        # (right or below); the partner takes the complement (keys are distinct: ties go to
        # the lower raster index, so exactly one of the two beats the other).
        beats = []
        pair_result = []
        for k, o in enumerate(FORWARD):
            if self.present[o]:
                other = self.nb_boosted[k]
                result = (other >= self.boosted) if self.lower[o] else (other > self.boosted)
                pair_result.append(result)
                beats.append(result)
            else:
                pair_result.append(Const(0))
        m.d.comb += self.pair_result.eq(Cat(*pair_result))
        for k, o in enumerate(BACKWARD):
            if self.present[o]:
                beats.append(~self.pair_from_back[k])
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

        # ---- neighbourhood sum and maximum (SPEC 8, 9), as separable 3x3 passes
        def sum_and_max(total, largest, sums, maxima, present):
            for k, here in enumerate(present):
                if here:
                    total = total + sums[k]
                    largest = Mux(maxima[k] > largest, maxima[k], largest)
            return total, largest

        left_right = (self.present[3], self.present[4])
        up_down = (self.present[1], self.present[6])
        row_sum, row_max = sum_and_max(self.active_duty, self.overlap_duty, self.nb_active_duty,
                                       self.nb_overlap_duty, left_right)
        m.d.comb += [self.row_sum.eq(row_sum), self.row_max.eq(row_max)]
        total, largest = sum_and_max(self.row_sum, self.row_max, self.nb_row_sum,
                                     self.nb_row_max, up_down)

        # ---- boost (SPEC 8): S = sum - n * duty against broadcast thresholds
        excess = Signal(signed(self.threshold_bits(cfg)))
        with m.If(self.boost_start):
            m.d.sync += excess.eq(total - _times(self.active_duty, n))
        with m.If(self.boost_try & (excess >= self.boost_threshold)):
            m.d.sync += self.boost.eq(self.boost_candidate)

        # ---- weak cells (SPEC 9), from the updated overlap duties
        with m.If(self.boost_start):
            m.d.sync += self.weak.eq((self.overlap_duty << MIN_DUTY_FRAC_BITS)
                                     < _times(largest, cfg.min_overlap_duty_q))

        # ---- learning and bump (SPEC 6, stages 4 and 7) of the previous step, on the slot
        # being read: `active` and `weak` are that step's, `prev_tap` its input bit
        top = cfg.perm_max
        learned = Mux(self.active,
                      Mux(self.prev_tap, _sat_add(self.perm, cfg.perm_inc, top),
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

