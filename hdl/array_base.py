"""What the serial and the count-parallel cell arrays share: their streams, the input plane and
its loader, the output rows, the permanence and pool memories, the processing elements and
their neighbour wiring, the start of a step or a command, and the state words of the cells.

`CellArrayBase` holds these; `hdl.serial.SerialCellArray` and `hdl.parallel.ParallelCellArray`
add their processing elements and sequencers (`hdl.array.CellArray` builds the one a geometry
asks for).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import (Array, Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal,
                          Signal, unsigned)
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.geometry import ArrayGeometry, Move

from .pe import FIELDS

__all__ = ["CellArrayBase", "Command", "InputPlane", "OutputRows", "StepControl",
           "SynapseMemories", "advance_counters", "cell_kind", "input_layout", "output_layout",
           "pe_kind"]


class Command(enum.Enum, shape=1):
    """Payload of a cell array's `command` stream."""
    READ_STATE = 0
    LOAD_STATE = 1


def input_layout(geometry: ArrayGeometry) -> data.StructLayout:
    """Payload of the `inputs` stream: ``bits``, one beat of input bits, and the step's
    ``learn`` flag."""
    return data.StructLayout({"bits": geometry.input_width, "learn": 1})


def output_layout(geometry: ArrayGeometry) -> data.StructLayout:
    """Payload of the `outputs` stream: ``active``, one row of active cells, ``last`` on the
    step's final row, and the step's latency ``cycles``."""
    return data.StructLayout({"active": geometry.config.cell_shape[1], "last": 1, "cycles": 32})


def advance_counters(m: Module, counters, then: str) -> None:
    """Count on in a mixed radix: `counters` is [(signal, last value), ...], the fastest first;
    after the last value of every one, go to FSM state `then` (the slowest stays at its last)."""
    (counter, last), rest = counters[0], counters[1:]
    with m.If(counter == last):
        if rest:
            m.d.sync += counter.eq(0)
            advance_counters(m, rest, then)
        else:
            m.next = then
    with m.Else():
        m.d.sync += counter.eq(counter + 1)


def cell_kind(geometry: ArrayGeometry, c: int) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """What makes cell c's logic differ from another's: which of its 8 neighbours exist, and
    which of them have the lower raster index."""
    nbs = geometry.neighbours[c]
    return (tuple(v is not None for v in nbs), tuple(v is not None and v < c for v in nbs))


def pe_kind(geometry: ArrayGeometry, q: int) -> list:
    """The `cell_kind` of each cell of PE q (PEs of the same kind are identical)."""
    return [cell_kind(geometry, c) for c in geometry.pe_cells(q)]


@dataclass
class SynapseMemories:
    """A permanence memory (`entries` permanences a word, written one by one) and a pool memory
    (per entry its pool bit, never written, then the input bit seen at that synapse in the last
    counting pass: what the next pass's learning write-back needs) for each group of PEs, all
    read at one address `addr`."""
    addr: Signal
    perm_read: list
    perm_write: list
    pool_read: list
    pool_write: list

    @classmethod
    def build(cls, m: Module, entries: int, perm_bits: int, depth: int, perms,
              pools) -> SynapseMemories:
        """The memories in `m`, one pair for each list of initial words in `perms` / `pools`."""
        mems = cls(Signal(range(depth), name="addr"), [], [], [], [])
        for k, (perm_init, pool_init) in enumerate(zip(perms, pools)):
            perm = Memory(shape=unsigned(entries * perm_bits), depth=depth, init=perm_init)
            pool = Memory(shape=unsigned(2 * entries), depth=depth, init=pool_init)
            m.submodules[f"perm_{k}"] = perm
            m.submodules[f"pool_{k}"] = pool
            mems.perm_read.append(perm.read_port())
            mems.perm_write.append(perm.write_port(granularity=perm_bits))
            mems.pool_read.append(pool.read_port())
            mems.pool_write.append(pool.write_port())
        for port in mems.perm_read + mems.pool_read:
            m.d.comb += port.addr.eq(mems.addr)
        return mems


@dataclass
class InputPlane:
    """The input bit planes and their loader. `current` is the plane being scanned (`move`,
    a `Move`, rotates it; `take_shadow` starts the next input, clearing `loaded`); the shadow
    plane takes the next input's beats meanwhile: `beats` counts them (non-zero while an input
    is arriving), `loaded` says it is whole, `next_learn` and `next_start` are its learn flag
    and the cycle of its first beat (`now`, a free-running count)."""
    current: Signal
    move: Signal
    take_shadow: Signal
    beats: Signal
    loaded: Signal
    next_learn: Signal
    next_start: Signal
    now: Signal


@dataclass
class OutputRows:
    """The rows of the last step, sent on the `outputs` stream while the array goes on:
    `pending` while they are offered, `bits` (every cell's active flag), `row` (the row
    offered), `cycles` (the step's latency)."""
    pending: Signal
    bits: Signal
    row: Signal
    cycles: Signal

    def publish(self, m: Module, actives, cycles) -> None:
        """Offer a step's rows (`actives`, raster order) with latency `cycles` from the next
        cycle (only when none is `pending`)."""
        m.d.sync += [self.bits.eq(actives), self.pending.eq(1), self.row.eq(0),
                     self.cycles.eq(cycles)]


@dataclass
class StepControl:
    """The sequencer's flags for the step in progress: `learn` (its learn flag), `start` (the
    cycle of its first input beat), `applying` (this pass writes the previous step's learning
    and tries boosts), `counting` (this pass counts overlaps: a step, not a flush), `pending`
    (the last learning step's updates are not yet in memory) and `idle` (the sequencer waits)."""
    learn: Signal
    start: Signal
    applying: Signal
    counting: Signal
    pending: Signal
    idle: Signal


class CellArrayBase(wiring.Component):
    """The streams and the parts of a cell array that do not depend on how its PEs count.

    Streams
      ``inputs``: input bits in raster order, ``input_width`` a beat (bit i of beat b is input
      bit b*input_width + i), with the ``learn`` flag, read on the last beat of an input.
      ``outputs``: for each input, H beats, one row of active cells each (bit j = column j),
      ``last`` on the final row; ``cycles`` is the step's latency, from the cycle its first
      input beat was accepted to the cycle before its first output beat is offered.
      ``command``: ``Command.LOAD_STATE`` then ``geometry.state_words`` words on ``state_in``
      replace the whole state; ``Command.READ_STATE`` sends them on ``state_out``. Commands are
      taken only between inputs. The word order is `ArrayGeometry.state_to_words`.
      ``busy``: high while an input, a step, its rows or pending learning are in the array.

    A subclass gives `make_pe` (its kind of PE) and `elaborate` (its memories and sequencer).
    With `pe_modules` (Verilog export only: {PE index: (module name, port names)}) each PE is
    an instance of its separately converted module (see `hdl.verilog`), and `pes` holds only
    the PEs' ports.
    """

    def __init__(self, geometry: ArrayGeometry, pe_modules: dict | None = None):
        self.geometry = g = geometry
        self.pe_modules = pe_modules
        super().__init__({
            "inputs": In(stream.Signature(input_layout(g))),
            "outputs": Out(stream.Signature(output_layout(g))),
            "command": In(stream.Signature(Command)),
            "state_in": In(stream.Signature(g.state_word_bits)),
            "state_out": Out(stream.Signature(g.state_word_bits)),
            "busy": Out(1),
        })
        self.pe_kinds = [pe_kind(g, q) for q in range(g.num_pes)]
        if pe_modules is None:
            self.pes = [self.make_pe(g, q) for q in range(g.num_pes)]
        else:
            self.pes = [self.pe_signature(g, q).create(path=(f"pe_{q}",))
                        for q in range(g.num_pes)]

    @classmethod
    def make_pe(cls, geometry: ArrayGeometry, q: int) -> wiring.Component:
        """PE q of an array of this kind for `geometry`."""
        raise NotImplementedError

    @classmethod
    def pe_signature(cls, geometry: ArrayGeometry, q: int) -> wiring.Signature:
        """The signature of PE q, without building the PE."""
        raise NotImplementedError

    @staticmethod
    def pe_instance(pe, module: str, ports: set[str]) -> Instance:
        """An instance of a PE's converted `module` (with port names `ports`), wired to the
        signals of `pe`'s ports."""
        args = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in pe.signature.flatten(pe):
            name = "__".join(str(p) for p in path)
            if name in ports:
                args[("i_" if member.flow == In else "o_") + name] = value
        return Instance(module, **args)

    def add_pes(self, m: Module, head) -> None:
        """The PEs (or instances of their exported modules) with `head` as their slot, and
        their neighbour wiring."""
        for q, pe in enumerate(self.pes):
            if self.pe_modules is None:
                m.submodules[f"pe_{q}"] = pe
            else:
                m.submodules[f"pe_{q}"] = self.pe_instance(pe, *self.pe_modules[q])
            m.d.comb += pe.slot.eq(head)
        self.wire_neighbours(m, head)

    def neighbour(self, q: int, o: int, outputs, head):
        """Neighbour o of PE q's head cell: `outputs(links)[position]` of the links of the PE
        that holds it, chosen on the slot `head` when it depends on it (None when it never
        exists)."""
        g = self.geometry
        sources = []
        for l in range(g.cells_per_pe):
            src = g.neighbour_source(q, l, o)
            sources.append(None if src is None else (src[0], g.ring_positions.index(src[1])))
        distinct = [s for i, s in enumerate(sources) if s is not None and s not in sources[:i]]
        if not distinct:
            return None
        value = outputs(self.pes[distinct[-1][0]].links)[distinct[-1][1]]
        for src in distinct[-2::-1]:
            # a constant table of the slots reading from `src`, indexed by the slot: a mux tree
            # log2(P) deep (an OR of one comparison per slot made a chain P deep, which
            # exhausted YoWASP Yosys's stack in XAIGER2 at P = 256)
            slots = sum(1 << l for l, s in enumerate(sources) if s == src)
            hit = Const(slots, g.cells_per_pe).bit_select(head, 1)
            value = Mux(hit, outputs(self.pes[src[0]].links)[src[1]], value)
        return value

    def vertical(self, q: int, o: int) -> int | None:
        """The PE whose head cell is the cell above (o = 1) or below (o = 6) PE q's head cell,
        whatever the slot (None when there is none)."""
        g = self.geometry
        P = g.cells_per_pe
        found = {g.neighbours[c][o] // P for c in g.pe_cells(q) if g.neighbours[c][o] is not None}
        assert all((g.neighbours[c][o] % P) == l for l, c in enumerate(g.pe_cells(q))
                   if g.neighbours[c][o] is not None)
        assert len(found) <= 1
        return found.pop() if found else None

    def wire_neighbours(self, m: Module, head) -> None:
        """Each PE's neighbour links from the ring outputs of the PEs that hold its head
        cell's neighbours (chosen on `head`, the cell every PE serves)."""
        g = self.geometry
        for q, pe in enumerate(self.pes):
            links = pe.links
            for o in range(8):
                v = self.neighbour(q, o, lambda x: x.boosted_at, head)
                if v is not None:
                    m.d.comb += links.nb_boosted[o].eq(v)
            # duties: of the left and right neighbours (then row results from the PEs above
            # and below), or of all 8
            for k, o in enumerate((3, 4) if g.separable else range(8)):
                for port, outputs in ((links.nb_active_duty, lambda x: x.active_duty_at),
                                      (links.nb_overlap_duty, lambda x: x.overlap_duty_at)):
                    v = self.neighbour(q, o, outputs, head)
                    if v is not None:
                        m.d.comb += port[k].eq(v)
            for k, o in enumerate((1, 6) if g.separable else ()):   # up, down
                other = self.vertical(q, o)
                if other is not None:
                    m.d.comb += [links.nb_row_sum[k].eq(self.pes[other].links.row_sum),
                                 links.nb_row_max[k].eq(self.pes[other].links.row_max)]

    def input_plane(self, m: Module) -> InputPlane:
        """The input planes and the loader that fills the shadow plane from ``inputs`` while
        the array works on the current input."""
        g = self.geometry
        hin, win = g.config.input_shape
        nin = g.config.num_inputs
        iw = g.input_width
        # Two bit planes: `shadow` takes the next input through the shift chain; `current`
        # (the input being processed) rotates during a pass.
        shadow = Signal(nin)
        plane = InputPlane(current=Signal(nin), move=Signal(3), take_shadow=Signal(),
                           beats=Signal(range(g.beats_per_input + 1)), loaded=Signal(),
                           next_learn=Signal(), next_start=Signal(32), now=Signal(32))
        current = plane.current
        position_of = {g.chain_position(g.plane_start[r]): r for r in range(nin)}
        beat = self.inputs.payload.bits
        chain = Cat(*(beat[p] if p < iw else shadow[position_of[p - iw]]
                      for p in (g.chain_position(g.plane_start[r]) for r in range(nin))))
        shift_in = Signal()
        with m.If(shift_in):
            m.d.sync += shadow.eq(chain)

        with m.If(plane.take_shadow):
            m.d.sync += current.eq(shadow)
        with m.Else():
            with m.Switch(plane.move):
                for mv, (dy, dx) in ((Move.DX_PLUS, (0, 1)), (Move.DX_MINUS, (0, -1)),
                                     (Move.DY_PLUS, (1, 0)), (Move.DY_MINUS, (-1, 0))):
                    with m.Case(mv):
                        m.d.sync += current.eq(Cat(
                            *(current[((y + dy) % hin) * win + (x + dx) % win]
                              for y in range(hin) for x in range(win))))

        m.d.sync += plane.now.eq(plane.now + 1)
        beats, loaded = plane.beats, plane.loaded
        m.d.comb += self.inputs.ready.eq(~loaded)
        with m.If(plane.take_shadow):
            m.d.sync += loaded.eq(0)
        with m.If(self.inputs.valid & ~loaded):
            m.d.comb += shift_in.eq(1)
            with m.If(beats == 0):
                m.d.sync += plane.next_start.eq(plane.now)
            with m.If(beats == g.beats_per_input - 1):
                m.d.sync += [beats.eq(0), loaded.eq(1),
                             plane.next_learn.eq(self.inputs.payload.learn)]
            with m.Else():
                m.d.sync += beats.eq(beats + 1)
        return plane

    def output_rows(self, m: Module) -> OutputRows:
        """The buffer of the last step's rows and their ``outputs`` stream."""
        cfg = self.geometry.config
        h, w = cfg.cell_shape
        rows = OutputRows(pending=Signal(name="out_pending"),
                          bits=Signal(cfg.num_cells, name="out_bits"),
                          row=Signal(range(h + 1)), cycles=Signal(32, name="out_cycles"))
        m.d.comb += [
            self.outputs.valid.eq(rows.pending),
            self.outputs.payload.active.eq(Array(rows.bits[r * w:(r + 1) * w]
                                                 for r in range(h))[rows.row]),
            self.outputs.payload.last.eq(rows.row == h - 1),
            self.outputs.payload.cycles.eq(rows.cycles),
        ]
        with m.If(rows.pending & self.outputs.ready):
            with m.If(rows.row == h - 1):
                m.d.sync += [rows.pending.eq(0), rows.row.eq(0)]
            with m.Else():
                m.d.sync += rows.row.eq(rows.row + 1)
        return rows

    def step_control(self, m: Module, plane: InputPlane, rows: OutputRows) -> StepControl:
        """The sequencer's step flags, and ``busy`` from them."""
        ctl = StepControl(learn=Signal(), start=Signal(32), applying=Signal(),
                          counting=Signal(), pending=Signal(), idle=Signal())
        m.d.comb += self.busy.eq(~ctl.idle | plane.loaded | (plane.beats != 0) | rows.pending
                                 | ctl.pending)
        return ctl

    def idle_state(self, m: Module, ctl: StepControl, plane: InputPlane, rows: OutputRows,
                   run: str, word_counters) -> None:
        """The IDLE state of the sequencer's FSM (call inside it): a whole input starts a step
        (state `run`); a command first writes pending learning (a pass of `run` that counts
        nothing), then clears `word_counters` and goes to LOAD_PERM or READ_ADDR."""
        m.d.comb += ctl.idle.eq(1)
        m.d.comb += self.command.ready.eq(~plane.loaded & (plane.beats == 0) & ~rows.pending
                                          & ~ctl.pending & ~self.inputs.valid)
        with m.If(plane.loaded):
            m.d.comb += plane.take_shadow.eq(1)
            m.d.sync += [ctl.learn.eq(plane.next_learn), ctl.start.eq(plane.next_start),
                         ctl.applying.eq(ctl.pending), ctl.counting.eq(1)]
            m.next = run
        with m.Elif(ctl.pending & self.command.valid):
            # write the pending learning before a state load or read-back
            m.d.sync += [ctl.applying.eq(1), ctl.counting.eq(0)]
            m.next = run
        with m.Elif(self.command.valid & self.command.ready):
            m.d.sync += [counter.eq(0) for counter in word_counters]
            with m.If(self.command.payload == Command.LOAD_STATE):
                m.next = "LOAD_PERM"
            with m.Else():
                m.next = "READ_ADDR"

    def cell_word_states(self, m: Module, word_q, word_l, word_f) -> None:
        """The LOAD_CELL and READ_CELL states of the sequencer's FSM (call inside it): the
        state words after the permanences, PE by PE (`word_q`), cell by cell (`word_l`), field
        by field (`word_f`), each turning only that field's ring of that PE; then IDLE."""
        pes = self.pes
        P = self.geometry.cells_per_pe
        pe_fields = Array(Array([getattr(pe.state, f) for f in FIELDS]) for pe in pes)

        def advance():
            with m.If(word_f == len(FIELDS) - 1):
                m.d.sync += word_f.eq(0)
                with m.If(word_l == P - 1):
                    m.d.sync += word_l.eq(0)
                    with m.If(word_q == len(pes) - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += word_q.eq(word_q + 1)
                with m.Else():
                    m.d.sync += word_l.eq(word_l + 1)
            with m.Else():
                m.d.sync += word_f.eq(word_f + 1)

        def field_strobe(port):
            """port[f] of PE word_q for field word_f."""
            for q, pe in enumerate(pes):
                m.d.comb += getattr(pe.state, port).eq(Mux(word_q == q, Const(1, 3) << word_f, 0))

        with m.State("LOAD_CELL"):
            m.d.comb += self.state_in.ready.eq(1)
            for pe in pes:
                m.d.comb += pe.state.load_value.eq(self.state_in.payload)
            with m.If(self.state_in.valid):
                field_strobe("load")
                advance()

        with m.State("READ_CELL"):
            m.d.comb += [self.state_out.valid.eq(1),
                         self.state_out.payload.eq(pe_fields[word_q][word_f])]
            with m.If(self.state_out.ready):
                field_strobe("unload")
                advance()
