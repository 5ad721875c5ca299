"""The cell array: input plane, permanence memories, cells and the sequencer, behind streams.

The sequencer only counts and broadcasts strobes; every decision about a cell (its overlap,
whether it wins, learns, or is weak, its boost) is taken inside the cell from its own state and
its 8 neighbours' registers.
"""

from __future__ import annotations

from amaranth.hdl import (Array, Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal,
                          Signal, signed, unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.golden import GoldenModel

from .cell import BACKWARD, FORWARD, Cell, Phase
from .geometry import ArrayGeometry, Move

__all__ = ["CellArray", "Command", "input_layout", "output_layout"]


class Command:
    """Payload of the `command` stream."""
    READ_STATE = 0
    LOAD_STATE = 1


def input_layout(geometry: ArrayGeometry) -> data.StructLayout:
    return data.StructLayout({"bits": geometry.input_width, "learn": 1})


def output_layout(geometry: ArrayGeometry) -> data.StructLayout:
    return data.StructLayout({"active": geometry.config.cell_shape[1], "last": 1, "cycles": 32})


class CellArray(wiring.Component):
    """The cellular spatial pooler of SPEC.md, bit-exact with `cellsp.sim.GoldenModel`.

    Streams
      ``inputs``: input bits in raster order, ``input_width`` a beat (bit i of beat b is input
      bit b*input_width + i), with the ``learn`` flag, read on the last beat of an input.
      ``outputs``: for each input, H beats, one row of active cells each (bit j = column j),
      ``last`` on the final row; ``cycles`` is the step's latency, from the cycle its first
      input beat was accepted to the cycle before its first output beat is offered.
      ``command``: ``Command.LOAD_STATE`` then ``geometry.state_words`` words on ``state_in``
      replace the whole state; ``Command.READ_STATE`` sends them on ``state_out``. Commands are
      taken only between inputs. The word order is `ArrayGeometry.state_to_words`.

    Cycle by cycle: the next input's beats are taken (one a cycle) into a shadow plane while
    the array works, and the last step's rows are sent while it goes on. In a stream of inputs
    a step costs 1 cycle to take the input, window + 1 cycles for the pass over the permanence
    memories (one synapse per cell per cycle, all cells in lockstep; the pass also writes back
    the previous learning step's updates and counts with them), boost_bits cycles for the
    boosted overlaps (a shift-and-add multiply) and 1 for inhibition; a learning step adds 1
    for the duty cycles and 1 to start the boost, whose 2^(boost_index_bits+1) + 1 threshold
    tries then run during the next pass (the next multiply waits for them). Inhibition waits
    until the previous step's rows have been taken. Pending updates are written by a pass of
    their own before a command is taken. Initial permanences are the golden model's, baked into
    the memories.
    """

    def __init__(self, geometry: ArrayGeometry, cell_modules: dict | None = None):
        """`cell_modules`, for Verilog export only: {cell index: (module name, port names)}
        to instantiate each cell as a separately converted module (see `hdl.verilog`)."""
        self.geometry = g = geometry
        self.cell_modules = cell_modules
        cfg = g.config
        super().__init__({
            "inputs": In(stream.Signature(input_layout(g))),
            "outputs": Out(stream.Signature(output_layout(g))),
            "command": In(stream.Signature(1)),
            "state_in": In(stream.Signature(g.state_word_bits)),
            "state_out": Out(stream.Signature(g.state_word_bits)),
            "busy": Out(1),
        })
        self.cells = [Cell(cfg, c, *self.cell_kind(g, c)) for c in range(cfg.num_cells)]
        if cell_modules is not None:
            for cell in self.cells:   # only their port signals are used
                cell._MustUse__silence = True

    @staticmethod
    def cell_kind(geometry: ArrayGeometry, c: int) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """What makes cell c's logic differ from another's: which of its 8 neighbours exist,
        and which of them have the lower raster index."""
        nbs = geometry.neighbours[c]
        return (tuple(v is not None for v in nbs), tuple(v is not None and v < c for v in nbs))

    @staticmethod
    def _instance(cell: Cell, module: str, ports: set[str]) -> Instance:
        """The cell as an instance of its converted module, wired to the cell's port signals."""
        args = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in cell.signature.flatten(cell):
            name = "__".join(str(p) for p in path)
            if name in ports:
                args[("i_" if member.flow == In else "o_") + name] = value
        return Instance(module, **args)

    def elaborate(self, platform):
        g = self.geometry
        cfg = g.config
        m = Module()
        h, w = cfg.cell_shape
        n = cfg.num_cells
        steps = g.scan_steps
        pb = cfg.perm_bits
        lanes = g.lanes

        for c, cell in enumerate(self.cells):
            if self.cell_modules is None:
                m.submodules[f"cell_{c}"] = cell
            else:
                m.submodules[f"cell_{c}"] = self._instance(cell, *self.cell_modules[c])
            nbs = g.neighbours[c]
            for k, o in enumerate(FORWARD):
                if nbs[o] is not None:
                    m.d.comb += cell.nb_boosted[k].eq(self.cells[nbs[o]].boosted)
            for k, o in enumerate(BACKWARD):
                if nbs[o] is not None:
                    m.d.comb += cell.pair_from_back[k].eq(self.cells[nbs[o]].pair_result[k])
            for k, o in enumerate((3, 4)):      # left, right
                if nbs[o] is not None:
                    other = self.cells[nbs[o]]
                    m.d.comb += [cell.nb_active_duty[k].eq(other.active_duty),
                                 cell.nb_overlap_duty[k].eq(other.overlap_duty)]
            for k, o in enumerate((1, 6)):      # up, down
                if nbs[o] is not None:
                    other = self.cells[nbs[o]]
                    m.d.comb += [cell.nb_row_sum[k].eq(other.row_sum),
                                 cell.nb_row_max[k].eq(other.row_max)]

        # ---------------------------------------------------------------- memories
        initial = g.memory_words(GoldenModel(cfg).permanences)
        pools = g.potential_words()
        perm_read, perm_write, pool_read = [], [], []
        for k in range(g.memories):
            mem = Memory(shape=unsigned(lanes * pb), depth=steps, init=initial[k])
            rom = Memory(shape=unsigned(lanes), depth=steps, init=pools[k])
            m.submodules[f"perm_{k}"] = mem
            m.submodules[f"pool_{k}"] = rom
            perm_read.append(mem.read_port())
            perm_write.append(mem.write_port(granularity=pb))
            pool_read.append(rom.read_port())
        addr = Signal(range(steps))
        for port in perm_read + pool_read:
            m.d.comb += port.addr.eq(addr)

        def lane_of(c):
            k, lane = divmod(c, lanes)
            return k, lane

        # ---------------------------------------------------------------- input plane
        hin, win = cfg.input_shape
        nin = cfg.num_inputs
        iw = g.input_width
        # Four bit planes: `shadow` takes the next input through the shift chain; `current`
        # (the input being processed) and `previous` (the input whose learning is still to be
        # written) rotate in lockstep during a pass; `current_start` keeps the current input
        # unrotated, to become `previous` at the next step.
        shadow = Signal(nin)
        current = Signal(nin)
        current_start = Signal(nin)
        previous = Signal(nin)
        position_of = {g.chain_position(g.plane_start[r]): r for r in range(nin)}
        beat = self.inputs.payload.bits
        chain = Cat(*(beat[p] if p < iw else shadow[position_of[p - iw]]
                      for p in (g.chain_position(g.plane_start[r]) for r in range(nin))))

        move = Signal(2)
        take_shadow = Signal()     # current <- shadow (the next input starts)
        take_previous = Signal()   # previous <- current_start (its learning is pending)
        shift_in = Signal()
        with m.If(shift_in):
            m.d.sync += shadow.eq(chain)
        with m.If(take_shadow):
            m.d.sync += current_start.eq(shadow)

        def rotate(m, plane):
            def rotated(dy, dx):
                return Cat(*(plane[((y + dy) % hin) * win + (x + dx) % win]
                             for y in range(hin) for x in range(win)))
            with m.Switch(move):
                with m.Case(Move.DX_PLUS):
                    m.d.sync += plane.eq(rotated(0, 1))
                with m.Case(Move.DX_MINUS):
                    m.d.sync += plane.eq(rotated(0, -1))
                with m.Case(Move.DY_PLUS):
                    m.d.sync += plane.eq(rotated(1, 0))

        with m.If(take_shadow):
            m.d.sync += current.eq(shadow)
        with m.Else():
            rotate(m, current)
        with m.If(take_previous):
            m.d.sync += previous.eq(current_start)
        with m.Else():
            rotate(m, previous)

        forward = Array(Const(mv, 2) for mv in g.scan_moves)

        for c, cell in enumerate(self.cells):
            k, lane = lane_of(c)
            m.d.comb += [cell.tap.eq(current[g.taps[c]]),
                         cell.prev_tap.eq(previous[g.taps[c]]),
                         cell.perm.eq(perm_read[k].data[lane * pb:(lane + 1) * pb]),
                         cell.potential.eq(pool_read[k].data[lane])]

        # ---------------------------------------------------------------- sequencer
        strobes = {name: Signal(name=f"do_{name}") for name in Phase.names}
        # boost thresholds (2k-1) * m * 2^(D-q) for each neighbourhood size m, and table[k]
        tries = (1 << (cfg.boost_index_bits + 1)) + 1
        k_try = Signal(range(tries))
        candidate = Array(Const(v, cfg.boost_bits) for v in cfg.boost_table)[k_try]
        thresholds = {}
        for size in sorted(set(g.neighbourhood_size)):
            thresholds[size] = Array(Const(v, signed(Cell.threshold_bits(cfg)))
                                     for v in Cell.boost_thresholds(cfg, size))[k_try]
        boost_bit = Signal(range(cfg.boost_bits))
        for c, cell in enumerate(self.cells):
            m.d.comb += [getattr(cell, name).eq(sig) for name, sig in strobes.items()]
            m.d.comb += [cell.boost_candidate.eq(candidate), cell.boost_bit.eq(boost_bit),
                         cell.boost_threshold.eq(thresholds[g.neighbourhood_size[c]])]

        now = Signal(32)                     # free-running cycle counter
        m.d.sync += now.eq(now + 1)

        # ---- input loader: fills the shadow plane while the array works on the current input
        beats = Signal(range(g.beats_per_input + 1))
        loaded = Signal()                    # the shadow holds a whole input
        next_learn = Signal()
        next_start = Signal(32)              # cycle of the first beat of the shadow's input
        m.d.comb += self.inputs.ready.eq(~loaded)
        with m.If(self.inputs.valid & ~loaded):
            m.d.comb += shift_in.eq(1)
            with m.If(beats == 0):
                m.d.sync += next_start.eq(now)
            with m.If(beats == g.beats_per_input - 1):
                m.d.sync += [beats.eq(0), loaded.eq(1), next_learn.eq(self.inputs.payload.learn)]
            with m.Else():
                m.d.sync += beats.eq(beats + 1)

        # ---- output: the rows of the last step, sent while the array goes on
        out_pending = Signal()
        out_cycles = Signal(32)
        row = Signal(range(h + 1))
        m.d.comb += [
            self.outputs.valid.eq(out_pending),
            self.outputs.payload.active.eq(Array(
                Cat(*(self.cells[r * w + j].active for j in range(w))) for r in range(h)
            )[row]),
            self.outputs.payload.last.eq(row == h - 1),
            self.outputs.payload.cycles.eq(out_cycles),
        ]
        with m.If(out_pending & self.outputs.ready):
            with m.If(row == h - 1):
                m.d.sync += [out_pending.eq(0), row.eq(0)]
            with m.Else():
                m.d.sync += row.eq(row + 1)

        step = Signal(range(steps + 2))
        learn = Signal()
        start = Signal(32)
        trying = Signal()
        applying = Signal()                  # this pass writes the previous step's learning
        finish = Signal()                    # this step's result is in the cells' `active`
        with m.If(finish):
            # offered from the next cycle on: count up to the cycle before that
            m.d.sync += [out_pending.eq(1), row.eq(0), out_cycles.eq(now + 1 - start)]

        # state words: perm section (s, memory, lane), then cells (c, field)
        word_s = Signal(range(steps + 1))
        word_k = Signal(range(g.memories + 1))
        word_lane = Signal(range(lanes + 1))
        word_c = Signal(range(n + 1))
        word_f = Signal(range(3))
        held = Signal(lanes * pb * g.memories)     # read-back buffer of one address
        cell_fields = Array(Array([cell.active_duty, cell.overlap_duty, cell.boost])
                            for cell in self.cells)

        def advance_perm_word(m, next_state):
            with m.If(word_lane == lanes - 1):
                m.d.sync += word_lane.eq(0)
                with m.If(word_k == g.memories - 1):
                    m.d.sync += word_k.eq(0)
                    with m.If(word_s == steps - 1):
                        m.next = next_state
                    with m.Else():
                        m.d.sync += word_s.eq(word_s + 1)
                with m.Else():
                    m.d.sync += word_k.eq(word_k + 1)
            with m.Else():
                m.d.sync += word_lane.eq(word_lane + 1)

        def advance_cell_word(m):
            with m.If(word_f == 2):
                m.d.sync += word_f.eq(0)
                with m.If(word_c == n - 1):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += word_c.eq(word_c + 1)
            with m.Else():
                m.d.sync += word_f.eq(word_f + 1)

        idle = Signal()
        pending = Signal()       # the last learning step's updates are not yet in memory
        m.d.comb += self.busy.eq(~idle | loaded | (beats != 0) | out_pending | pending)

        # boost thresholds are tried one a cycle from `boost_start` on, whatever else runs
        with m.If(trying):
            m.d.comb += strobes["boost_try"].eq(1)
            m.d.sync += k_try.eq(k_try + 1)
            with m.If(k_try == tries - 1):
                m.d.sync += trying.eq(0)

        def write_back(m, s):
            """Write the learned permanences of scan step s (read the cycle before)."""
            m.d.comb += strobes["apply"].eq(1)
            for k, port in enumerate(perm_write):
                m.d.comb += [port.addr.eq(s), port.en.eq(-1)]
                cells = g.memory_cells(k)
                m.d.comb += port.data.eq(Cat(*(self.cells[c].perm_next for c in cells),
                                             Const(0, (lanes - len(cells)) * pb)))

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                m.d.comb += self.command.ready.eq(~loaded & (beats == 0) & ~out_pending
                                                  & ~pending & ~self.inputs.valid)
                with m.If(loaded):
                    m.d.comb += [take_shadow.eq(1), take_previous.eq(pending),
                                 strobes["clear"].eq(1)]
                    m.d.sync += [loaded.eq(0), learn.eq(next_learn), start.eq(next_start),
                                 step.eq(0), applying.eq(pending)]
                    m.next = "PASS"
                with m.Elif(pending & self.command.valid):
                    # write the pending learning before a state load or read-back
                    m.d.comb += take_previous.eq(1)
                    m.d.sync += [step.eq(0), applying.eq(1)]
                    m.next = "FLUSH"
                with m.Elif(self.command.valid & self.command.ready):
                    m.d.sync += [word_s.eq(0), word_k.eq(0), word_lane.eq(0), word_c.eq(0),
                                 word_f.eq(0)]
                    with m.If(self.command.payload == Command.LOAD_STATE):
                        m.next = "LOAD_PERM"
                    with m.Else():
                        m.next = "READ_ADDR"

            with m.State("PASS"):
                # cycle `step`: read address `step`; the data of scan step step-1 is valid:
                # apply the previous step's learning to it, write it back, count with it
                m.d.comb += addr.eq(Mux(step < steps, step, 0))
                with m.If(step != 0):
                    m.d.comb += [strobes["count"].eq(1), move.eq(forward[step - 1])]
                    with m.If(applying):
                        write_back(m, step - 1)
                with m.If(step == steps):
                    m.d.sync += [boost_bit.eq(cfg.boost_bits - 1), pending.eq(0),
                                 applying.eq(0)]
                    m.next = "BOOSTED"
                with m.Else():
                    m.d.sync += step.eq(step + 1)

            with m.State("FLUSH"):
                m.d.comb += addr.eq(Mux(step < steps, step, 0))
                with m.If(step != 0):
                    m.d.comb += move.eq(forward[step - 1])
                    write_back(m, step - 1)
                with m.If(step == steps):
                    m.d.sync += [pending.eq(0), applying.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += step.eq(step + 1)

            with m.State("BOOSTED"):
                # overlap * boost, one boost bit a cycle from the top (after the last try)
                with m.If(~trying):
                    m.d.comb += strobes["multiply"].eq(1)
                    with m.If(boost_bit == 0):
                        m.next = "INHIBIT"
                    with m.Else():
                        m.d.sync += boost_bit.eq(boost_bit - 1)

            with m.State("INHIBIT"):
                # the previous step's rows must be out before `active` changes
                with m.If(~out_pending):
                    m.d.comb += strobes["inhibit"].eq(1)
                    with m.If(learn):
                        m.next = "DUTY"
                    with m.Else():
                        m.next = "FINISH"

            with m.State("FINISH"):
                m.d.comb += finish.eq(1)
                m.next = "IDLE"

            with m.State("DUTY"):
                m.d.comb += [strobes["duty"].eq(1), finish.eq(1)]
                m.next = "BOOST_START"

            with m.State("BOOST_START"):
                # weak flags and S registered; the permanence updates wait for the next pass
                m.d.comb += strobes["boost_start"].eq(1)
                m.d.sync += [k_try.eq(0), trying.eq(1), pending.eq(1)]
                m.next = "IDLE"

            with m.State("LOAD_PERM"):
                m.d.comb += self.state_in.ready.eq(1)
                with m.If(self.state_in.valid):
                    for k, port in enumerate(perm_write):
                        m.d.comb += [port.addr.eq(word_s),
                                     port.data.eq(self.state_in.payload[:pb].replicate(lanes)),
                                     port.en.eq(Mux(word_k == k, (Const(1, lanes) << word_lane)[:lanes], 0))]
                    advance_perm_word(m, "LOAD_CELL")

            with m.State("LOAD_CELL"):
                m.d.comb += self.state_in.ready.eq(1)
                with m.If(self.state_in.valid):
                    for c, cell in enumerate(self.cells):
                        here = word_c == c
                        m.d.comb += [cell.load_value.eq(self.state_in.payload),
                                     cell.load_active_duty.eq(here & (word_f == 0)),
                                     cell.load_overlap_duty.eq(here & (word_f == 1)),
                                     cell.load_boost.eq(here & (word_f == 2))]
                    advance_cell_word(m)

            with m.State("READ_ADDR"):
                m.d.comb += addr.eq(word_s)
                m.next = "READ_HOLD"

            with m.State("READ_HOLD"):
                m.d.sync += held.eq(Cat(*(port.data for port in perm_read)))
                m.next = "READ_PERM"

            with m.State("READ_PERM"):
                lanes_held = Array(held[i * pb:(i + 1) * pb] for i in range(g.memories * lanes))
                m.d.comb += [self.state_out.valid.eq(1),
                             self.state_out.payload.eq(lanes_held[word_k * lanes + word_lane])]
                with m.If(self.state_out.ready):
                    with m.If((word_lane == lanes - 1) & (word_k == g.memories - 1)):
                        m.next = "READ_ADDR"
                    advance_perm_word(m, "READ_CELL")

            with m.State("READ_CELL"):
                m.d.comb += [self.state_out.valid.eq(1),
                             self.state_out.payload.eq(cell_fields[word_c][word_f])]
                with m.If(self.state_out.ready):
                    advance_cell_word(m)
        return m
