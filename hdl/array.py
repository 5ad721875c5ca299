"""The cell array: input plane, permanence memories, processing elements and the sequencer,
behind streams.

The sequencer only counts and broadcasts strobes; every decision about a cell (its overlap,
whether it wins, learns, or is weak, its boost) is taken inside its processing element from its
own state and its 8 neighbours' registers.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import (Array, Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal,
                          Signal, signed, unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.golden import GoldenModel

from .pe import FIELDS, Phase, ProcessingElement
from cellsp.sim.geometry import ArrayGeometry, Move

__all__ = ["CellArray", "Command", "input_layout", "output_layout"]


class Command:
    """Payload of the `command` stream."""
    READ_STATE = 0
    LOAD_STATE = 1


def input_layout(geometry: ArrayGeometry) -> data.StructLayout:
    return data.StructLayout({"bits": geometry.input_width, "learn": 1})


def output_layout(geometry: ArrayGeometry) -> data.StructLayout:
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
    """

    def __init__(self, geometry: ArrayGeometry, pe_modules: dict | None = None):
        """`pe_modules`, for Verilog export only: {PE index: (module name, port names)} to
        instantiate each PE as a separately converted module (see `hdl.verilog`)."""
        self.geometry = g = geometry
        self.pe_modules = pe_modules
        super().__init__({
            "inputs": In(stream.Signature(input_layout(g))),
            "outputs": Out(stream.Signature(output_layout(g))),
            "command": In(stream.Signature(1)),
            "state_in": In(stream.Signature(g.state_word_bits)),
            "state_out": Out(stream.Signature(g.state_word_bits)),
            "busy": Out(1),
        })
        self.pes = [self.make_pe(g, q) for q in range(g.num_pes)]
        if pe_modules is not None:
            for pe in self.pes:   # only their port signals are used
                pe._MustUse__silence = True

    @staticmethod
    def cell_kind(geometry: ArrayGeometry, c: int) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """What makes cell c's logic differ from another's: which of its 8 neighbours exist,
        and which of them have the lower raster index."""
        nbs = geometry.neighbours[c]
        return (tuple(v is not None for v in nbs), tuple(v is not None and v < c for v in nbs))

    @staticmethod
    def pe_kind(geometry: ArrayGeometry, q: int) -> list:
        return [CellArray.cell_kind(geometry, c) for c in geometry.pe_cells(q)]

    @staticmethod
    def make_pe(geometry: ArrayGeometry, q: int) -> ProcessingElement:
        """PE q of the array (PEs of the same `pe_kind` are identical)."""
        if geometry.parallel_count:
            from .parallel import ParallelPE
            return ParallelPE(geometry.config, CellArray.pe_kind(geometry, q),
                              geometry.ring_positions, geometry.separable)
        return ProcessingElement(geometry.config, CellArray.pe_kind(geometry, q),
                                 geometry.ring_positions, geometry.separable,
                                 geometry.ring_memory_min)

    @staticmethod
    def _instance(pe: ProcessingElement, module: str, ports: set[str]) -> Instance:
        """The PE as an instance of its converted module, wired to the PE's port signals."""
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
                m.submodules[f"pe_{q}"] = self._instance(pe, *self.pe_modules[q])
            m.d.comb += pe.slot.eq(head)
        self.wire_neighbours(m, head)

    @staticmethod
    def synapse_memories(m: Module, entries: int, perm_bits: int, depth: int, perms,
                         pools) -> SimpleNamespace:
        """A permanence memory (`entries` permanences a word, written one by one) and a pool
        memory (per entry its pool bit, never written, then the input bit seen at that synapse
        in the last counting pass: what the next pass's learning write-back needs) for each
        list of initial words in `perms` / `pools`, all read at one address ``addr``; with
        their ``perm_read``, ``perm_write``, ``pool_read`` and ``pool_write`` ports."""
        ports = SimpleNamespace(perm_read=[], perm_write=[], pool_read=[], pool_write=[])
        for k, (perm_init, pool_init) in enumerate(zip(perms, pools)):
            mem = Memory(shape=unsigned(entries * perm_bits), depth=depth, init=perm_init)
            pool = Memory(shape=unsigned(2 * entries), depth=depth, init=pool_init)
            m.submodules[f"perm_{k}"] = mem
            m.submodules[f"pool_{k}"] = pool
            ports.perm_read.append(mem.read_port())
            ports.perm_write.append(mem.write_port(granularity=perm_bits))
            ports.pool_read.append(pool.read_port())
            ports.pool_write.append(pool.write_port())
        ports.addr = Signal(range(depth), name="addr")
        for port in ports.perm_read + ports.pool_read:
            m.d.comb += port.addr.eq(ports.addr)
        return ports

    def wire_neighbours(self, m: Module, head) -> None:
        """Each PE's neighbour ports from the ring outputs of the PEs that hold its head
        cell's neighbours (chosen on `head`, the cell every PE serves)."""
        g = self.geometry
        P = g.cells_per_pe
        pes = self.pes

        def neighbour(q, o, outputs):
            """Neighbour o of PE q's head cell: `outputs(pe)[position]` of the PE that holds
            it, chosen on the slot when it depends on it (None when it never exists)."""
            sources = []
            for l in range(P):
                src = g.neighbour_source(q, l, o)
                sources.append(None if src is None
                               else (src[0], g.ring_positions.index(src[1])))
            distinct = [s for i, s in enumerate(sources) if s is not None and s not in sources[:i]]
            if not distinct:
                return None
            value = outputs(pes[distinct[-1][0]])[distinct[-1][1]]
            for src in distinct[-2::-1]:
                hit = 0
                for l, s in enumerate(sources):
                    if s == src:
                        hit = hit | (head == l)
                value = Mux(hit, outputs(pes[src[0]])[src[1]], value)
            return value

        def vertical(q, o):
            """The PE whose head cell is the cell above (o = 1) or below (o = 6) PE q's head
            cell, whatever the slot (None when there is none)."""
            found = {g.neighbours[c][o] // P for c in g.pe_cells(q)
                     if g.neighbours[c][o] is not None}
            assert all((g.neighbours[c][o] % P) == l for l, c in enumerate(g.pe_cells(q))
                       if g.neighbours[c][o] is not None)
            assert len(found) <= 1
            return found.pop() if found else None

        for q, pe in enumerate(pes):
            for o in range(8):
                v = neighbour(q, o, lambda x: x.boosted_at)
                if v is not None:
                    m.d.comb += pe.nb_boosted[o].eq(v)
            # duties: of the left and right neighbours (then row results from the PEs above
            # and below), or of all 8
            for k, o in enumerate((3, 4) if g.separable else range(8)):
                for port, outputs in ((pe.nb_active_duty, lambda x: x.active_duty_at),
                                      (pe.nb_overlap_duty, lambda x: x.overlap_duty_at)):
                    v = neighbour(q, o, outputs)
                    if v is not None:
                        m.d.comb += port[k].eq(v)
            for k, o in enumerate((1, 6) if g.separable else ()):   # up, down
                other = vertical(q, o)
                if other is not None:
                    m.d.comb += [pe.nb_row_sum[k].eq(pes[other].row_sum),
                                 pe.nb_row_max[k].eq(pes[other].row_max)]

    def plane_and_streams(self, m: Module) -> SimpleNamespace:
        """The input plane, the input loader and the output rows, shared by both sequencers:
        `current` (the plane being scanned; `move` rotates it, `take_shadow` starts the next
        input), `loaded`/`next_learn`/`next_start` (the shadow's input, its learn flag and
        first cycle), `beats` (non-zero while an input is arriving), `now`, and the output
        buffer `out_bits`/`out_pending`/`out_cycles`/`row`."""
        g = self.geometry
        cfg = g.config
        h, w = cfg.cell_shape
        n = cfg.num_cells
        hin, win = cfg.input_shape
        nin = cfg.num_inputs
        iw = g.input_width
        # Two bit planes: `shadow` takes the next input through the shift chain; `current`
        # (the input being processed) rotates during a pass.
        shadow = Signal(nin)
        current = Signal(nin)
        position_of = {g.chain_position(g.plane_start[r]): r for r in range(nin)}
        beat = self.inputs.payload.bits
        chain = Cat(*(beat[p] if p < iw else shadow[position_of[p - iw]]
                      for p in (g.chain_position(g.plane_start[r]) for r in range(nin))))

        move = Signal(3)
        take_shadow = Signal()     # current <- shadow (the next input starts)
        shift_in = Signal()
        with m.If(shift_in):
            m.d.sync += shadow.eq(chain)

        with m.If(take_shadow):
            m.d.sync += current.eq(shadow)
        with m.Else():
            with m.Switch(move):
                for mv, (dy, dx) in ((Move.DX_PLUS, (0, 1)), (Move.DX_MINUS, (0, -1)),
                                     (Move.DY_PLUS, (1, 0)), (Move.DY_MINUS, (-1, 0))):
                    with m.Case(mv):
                        m.d.sync += current.eq(Cat(
                            *(current[((y + dy) % hin) * win + (x + dx) % win]
                              for y in range(hin) for x in range(win))))

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
        out_bits = Signal(n)
        row = Signal(range(h + 1))
        m.d.comb += [
            self.outputs.valid.eq(out_pending),
            self.outputs.payload.active.eq(Array(out_bits[r * w:(r + 1) * w]
                                                 for r in range(h))[row]),
            self.outputs.payload.last.eq(row == h - 1),
            self.outputs.payload.cycles.eq(out_cycles),
        ]
        with m.If(out_pending & self.outputs.ready):
            with m.If(row == h - 1):
                m.d.sync += [out_pending.eq(0), row.eq(0)]
            with m.Else():
                m.d.sync += row.eq(row + 1)

        return SimpleNamespace(current=current, take_shadow=take_shadow, move=move, now=now,
                               beats=beats, loaded=loaded, next_learn=next_learn,
                               next_start=next_start, out_pending=out_pending,
                               out_cycles=out_cycles, out_bits=out_bits, row=row)

    def cell_word_states(self, m: Module, word_q, word_l, word_f) -> None:
        """The LOAD_CELL and READ_CELL states of the sequencer's FSM (call inside it): the
        state words after the permanences, PE by PE (`word_q`), cell by cell (`word_l`), field
        by field (`word_f`), each turning only that field's ring of that PE; then IDLE."""
        pes = self.pes
        P = self.geometry.cells_per_pe
        pe_fields = Array(Array([getattr(pe, f) for f in FIELDS]) for pe in pes)

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
                m.d.comb += getattr(pe, port).eq(Mux(word_q == q, Const(1, 3) << word_f, 0))

        with m.State("LOAD_CELL"):
            m.d.comb += self.state_in.ready.eq(1)
            for pe in pes:
                m.d.comb += pe.load_value.eq(self.state_in.payload)
            with m.If(self.state_in.valid):
                field_strobe("load")
                advance()

        with m.State("READ_CELL"):
            m.d.comb += [self.state_out.valid.eq(1),
                         self.state_out.payload.eq(pe_fields[word_q][word_f])]
            with m.If(self.state_out.ready):
                field_strobe("unload")
                advance()

    def elaborate(self, platform):
        g = self.geometry
        if g.parallel_count:
            from .parallel import elaborate_parallel
            return elaborate_parallel(self, platform)
        cfg = g.config
        m = Module()
        h, w = cfg.cell_shape
        P = g.cells_per_pe
        N = g.scan_steps
        B = cfg.boost_bits
        depth = g.memory_depth
        pb = cfg.perm_bits
        lanes = g.lanes
        pes = self.pes

        slot = Signal(range(P + 1))          # the cell every PE serves (P: the tail slot)
        head = Signal(max(1, (P - 1).bit_length()))
        m.d.comb += head.eq(slot)

        self.add_pes(m, head)

        # ---------------------------------------------------------------- memories
        mems = self.synapse_memories(m, lanes, pb, depth,
                                     g.memory_words(GoldenModel(cfg).permanences),
                                     g.potential_words())
        addr, perm_read, perm_write = mems.addr, mems.perm_read, mems.perm_write
        pool_read, pool_write = mems.pool_read, mems.pool_write

        def lane_of(q):
            return divmod(q, lanes)

        # ---------------------------------------------------------------- input plane
        io = self.plane_and_streams(m)
        current, take_shadow, move = io.current, io.take_shadow, io.move
        now, beats, loaded = io.now, io.beats, io.loaded
        next_learn, next_start = io.next_learn, io.next_start
        out_pending, out_cycles, out_bits, row = io.out_pending, io.out_cycles, io.out_bits, io.row

        def choose(values):
            """values[l] for the served cell l (one value when P = 1)."""
            return values[0] if P == 1 else Array(values)[head]

        for q, pe in enumerate(pes):
            k, lane = lane_of(q)
            cells = g.pe_cells(q)
            m.d.comb += [pe.tap.eq(choose([current[g.taps[c]] for c in cells])),
                         pe.prev_tap.eq(pool_read[k].data[lanes + lane]),
                         pe.perm.eq(perm_read[k].data[lane * pb:(lane + 1) * pb]),
                         pe.potential.eq(pool_read[k].data[lane])]

        # ---------------------------------------------------------------- sequencer
        strobes = {name: Signal(name=f"do_{name}") for name in Phase.names}
        # boost thresholds for each neighbourhood size m, and table[k], tried at slot cycle k
        tries = len(cfg.boost_table)                      # 2^(q+1) + 1 entries
        R = ProcessingElement.NEIGHBOURHOOD_LATENCY     # the slot's first read and first try
        t = Signal(range(max(N + 2 + R, B + 1, tries + R)))     # cycle within the slot
        k_try = Signal(range(tries))
        m.d.comb += k_try.eq(t - R)
        candidate = Array(Const(v, B) for v in cfg.boost_table)[k_try]
        tb = ProcessingElement.threshold_bits(cfg)
        thresholds = {}
        for size in sorted(set(g.neighbourhood_size)):
            thresholds[size] = Array(Const(v, signed(tb))
                                     for v in ProcessingElement.boost_thresholds(cfg, size))[k_try]
        boost_bit = Signal(range(B))
        for pe in pes:
            m.d.comb += [getattr(pe, name).eq(sig) for name, sig in strobes.items()]
            m.d.comb += [pe.boost_candidate.eq(candidate), pe.boost_bit.eq(boost_bit)]
            m.d.comb += [pe.boost_threshold[i].eq(thresholds[size])
                         for i, size in enumerate(pe.sizes)]

        learn = Signal()
        start = Signal(32)
        applying = Signal()   # this pass writes the previous step's learning and tries boosts
        counting = Signal()   # this pass counts overlaps (a step, not a flush)

        # state words: perm section (address, memory, lane), then cells (PE, cell, field)
        word_s = Signal(range(depth + 1))
        word_k = Signal(range(g.memories + 1))
        word_lane = Signal(range(lanes + 1))
        word_q = Signal(range(g.num_pes + 1))
        word_l = Signal(range(P + 1))
        word_f = Signal(range(len(FIELDS)))
        held = Signal(lanes * pb * g.memories)     # read-back buffer of one address

        def advance_perm_word(m, next_state):
            advance_counters(m, [(word_lane, lanes - 1), (word_k, g.memories - 1),
                                 (word_s, depth - 1)], next_state)

        idle = Signal()
        pending = Signal()       # the last learning step's updates are not yet in memory
        m.d.comb += self.busy.eq(~idle | loaded | (beats != 0) | out_pending | pending)

        # ---- the pass: P slots, one per cell, then the tail slot (the last cell's product)
        forward = Array(Const(mv, 3) for mv in g.scan_moves)
        backward = Array(Const(mv, 3) for mv in g.scan_moves_reverse)
        # R cycles for the neighbourhood registers, N reads, their data a cycle later, each
        # count registered: N + 2 + R cycles at least
        slot_end = Mux(applying, max(N + 2 + R, B + 1, tries + R) - 1, max(N + 2 + R, B + 1) - 1)
        base = Signal(range(depth + 1))      # slot * N
        odd = slot[0] if P > 1 else Const(0)
        step = (t - R)[:len(t)]              # the read issued this cycle
        data = (t > R) & (t <= N + R)        # the read of the cycle before is on the ports
        data_index = (t - R - 1)[:len(t)]

        def pass_cycle(m):
            """One cycle of a pass: a step's (counting; after the last cell's slot comes the
            tail slot, then inhibition) or a flush's (which ends with the last cell's slot)."""
            with m.If(slot < P):
                with m.If((t >= R) & (t < N + R)):
                    m.d.comb += addr.eq(base + Mux(odd, (N - 1 - step)[:len(t)], step))
                with m.If(data):
                    m.d.comb += move.eq(Mux(odd, backward[data_index], forward[data_index]))
                    m.d.comb += strobes["count"].eq(counting)
                    write_address = base + Mux(odd, (N - 1 - data_index)[:len(t)], data_index)
                    for k, port in enumerate(pool_write):
                        seen = Cat(*(pes[q].tap for q in g.memory_pes(k)))
                        m.d.comb += [port.addr.eq(write_address), port.en.eq(counting),
                                     port.data.eq(Cat(pool_read[k].data[:lanes], seen))]
                    with m.If(applying):
                        m.d.comb += strobes["apply"].eq(1)
                        for k, port in enumerate(perm_write):
                            m.d.comb += [port.addr.eq(write_address), port.en.eq(-1)]
                            m.d.comb += port.data.eq(Cat(*(pes[q].perm_next
                                                           for q in g.memory_pes(k)),
                                                         Const(0, (lanes - len(g.memory_pes(k)))
                                                               * pb)))
                m.d.comb += strobes["try_boost"].eq(applying & (t >= R) & (t < tries + R))
                multiply(m, (slot != 0) & counting)
                with m.If(t == slot_end):
                    m.d.comb += [strobes["rotate"].eq(1), strobes["store"].eq(1)]
                    m.d.sync += [t.eq(0), slot.eq(slot + 1), base.eq(base + N)]
                    with m.If((slot == P - 1) & ~counting):
                        m.d.sync += [pending.eq(0), applying.eq(0)]
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += t.eq(t + 1)
            with m.Else():
                # the tail slot: the last cell's product
                multiply(m, 1)
                with m.If(t == B - 1):
                    m.d.sync += [t.eq(0), slot.eq(0), pending.eq(0), applying.eq(0)]
                    m.next = "INHIBIT"
                with m.Else():
                    m.d.sync += t.eq(t + 1)

        def multiply(m, enable):
            with m.If(enable & (t < B)):
                m.d.comb += [strobes["multiply"].eq(1),
                             strobes["multiply_first"].eq(t == 0),
                             strobes["multiply_last"].eq(t == B - 1),
                             boost_bit.eq(t)]

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                m.d.comb += self.command.ready.eq(~loaded & (beats == 0) & ~out_pending
                                                  & ~pending & ~self.inputs.valid)
                m.d.sync += [t.eq(0), slot.eq(0), base.eq(0)]
                with m.If(loaded):
                    m.d.comb += take_shadow.eq(1)
                    m.d.sync += [loaded.eq(0), learn.eq(next_learn), start.eq(next_start),
                                 applying.eq(pending), counting.eq(1)]
                    m.next = "PASS"
                with m.Elif(pending & self.command.valid):
                    # write the pending learning before a state load or read-back
                    m.d.sync += [applying.eq(1), counting.eq(0)]
                    m.next = "PASS"
                with m.Elif(self.command.valid & self.command.ready):
                    m.d.sync += [word_s.eq(0), word_k.eq(0), word_lane.eq(0), word_q.eq(0),
                                 word_l.eq(0), word_f.eq(0)]
                    with m.If(self.command.payload == Command.LOAD_STATE):
                        m.next = "LOAD_PERM"
                    with m.Else():
                        m.next = "READ_ADDR"

            with m.State("PASS"):
                pass_cycle(m)

            with m.State("INHIBIT"):
                m.d.comb += [strobes["rotate"].eq(1), strobes["inhibit"].eq(1)]
                with m.If(slot == P - 1):
                    m.d.sync += slot.eq(0)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)

            with m.State("FINISH"):
                # the previous step's rows must be out before the buffer changes
                with m.If(~out_pending):
                    m.d.sync += [out_bits.eq(Cat(*(pe.actives for pe in pes))),
                                 out_pending.eq(1), row.eq(0), out_cycles.eq(now + 1 - start)]
                    with m.If(learn):
                        m.next = "DUTY"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("DUTY"):
                m.d.comb += [strobes["rotate"].eq(1), strobes["duty"].eq(1)]
                with m.If(slot == P - 1):
                    # the permanence updates, weak flags and boosts wait for the next pass
                    m.d.sync += [slot.eq(0), pending.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)

            with m.State("LOAD_PERM"):
                m.d.comb += self.state_in.ready.eq(1)
                with m.If(self.state_in.valid):
                    for k, port in enumerate(perm_write):
                        m.d.comb += [port.addr.eq(word_s),
                                     port.data.eq(self.state_in.payload[:pb].replicate(lanes)),
                                     port.en.eq(Mux(word_k == k,
                                                    (Const(1, lanes) << word_lane)[:lanes], 0))]
                    advance_perm_word(m, "LOAD_CELL")

            self.cell_word_states(m, word_q, word_l, word_f)

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

        return m
