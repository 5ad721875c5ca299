# amaranth: UnusedElaboratable=no
"""Formal properties of the cell array and the protocol engine, as Amaranth `Assert` / `Assume`
around the real gateware (proved by `hdl/formal.py`).

Each property is an Elaboratable without ports that instantiates the gateware, drives every
input it leaves open from a free value (`AnySeq`: the solver picks it anew every cycle),
assumes only what the gateware's environment guarantees, and asserts the property on the
gateware's own signals:

- `InhibitionProperty` (SPEC 5): the processing elements of an array, wired by the array's
  own neighbour wiring, under free phase strobes; whenever a cell's inhibition result enters
  its ring, it is active exactly when its boosted overlap is positive and fewer than `winners`
  of its neighbours (the geometry's neighbour table) beat it: a larger boosted overlap, or an
  equal one and a lower raster index.
- `DutyRangeProperty` (SPEC 7): every duty cycle of a PE stays in ``0 .. 2^duty_bits``,
  whatever its phases and neighbours, when only such values are loaded.
- `PermanenceProperty` (SPEC 3, 6): a PE's permanence update never wraps: ``perm_next`` is
  the permanence kept, or saturating-incremented / decremented by ``perm_inc`` / ``perm_dec``
  (an increment only on an active input bit), then possibly bumped by ``perm_bump``; a
  synapse outside the pool keeps its value.
- `FrameCheckProperty` (PROTOCOL.md): the receiver offers a frame as accepted only when the
  bytes it took form a whole frame (marker, header, payload of the stated length) whose CRC
  field is the CRC-16/CCITT-FALSE of its header and payload (a reference CRC register, bit by
  bit from the polynomial, follows the receiver's CRC unit byte by byte), and the frame's
  type, seq, length and check are those bytes.
- `DispatchProperty`: the dispatcher executes a request only for a frame the receiver accepted
  whose seq is the expected one (or an IDENTIFY, which PROTOCOL.md always executes: it sets
  the expected number), after which the next is expected (so between IDENTIFYs a sequence
  number is executed at most once in every 256 requests executed), and while it holds a
  refused frame (a bad CRC, among others) it executes nothing and drives nothing into the
  array: no input, no command, no state word, no reset, no step. The engine joins the
  receiver's `frames` to the dispatcher's directly (`hdl/protocol.py`), so with
  `FrameCheckProperty` the engine never acts on a frame whose CRC fails.

The receiver and the dispatcher are reached through their elaborated bodies (to read their
parts: the CRC unit, the executed requests), so the components themselves are never elaborated:
the line at the top of this file keeps Amaranth from warning about that.

Each takes a `flaw`, a deliberate defect (in the gateware or in the environment, listed in
`FLAWS`) under which the property must fail: how the tests show that a proof can fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from amaranth.asserts import AnySeq
from amaranth.hdl import Array, Assert, Assume, Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring

from cellsp.sim.config import SPConfig
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import MARKER, ProtocolLayout

from .array import array_class, pe_kind
from .dispatcher import RequestDispatcher
from .frame_receiver import FrameReceiver
from .frames import MessageType
from .parallel import ParallelPE, ParallelPhase
from .pe import Phase, ProcessingElement, slot_shape, strobe, synapse_ports

__all__ = ["InhibitionProperty", "DutyRangeProperty", "PermanenceProperty",
           "FrameCheckProperty", "DispatchProperty", "WrappingPE", "TiesReversedArray",
           "ties_reversed", "FLAWS", "drive_free", "crc16_ccitt_false", "Proof", "proof_plan",
           "SMALL", "CLIPPED", "SMALL_FRAMES", "LONGER_FRAMES"]

#: per property class name: the flaws it accepts (each must make the proof fail)
FLAWS = {
    "InhibitionProperty": ("ties_reversed",),
    "DutyRangeProperty": ("unchecked_load",),
    "PermanenceProperty": ("wrapping_update",),
    "FrameCheckProperty": ("other_crc",),
    "DispatchProperty": ("unstable_frames", "seq_off_by_one"),
}


def _check_flaw(owner, flaw):
    allowed = FLAWS[type(owner).__name__]
    if flaw is not None and flaw not in allowed:
        raise ValueError(f"flaw must be one of {', '.join(allowed)} or None, not {flaw!r}")
    return flaw


def drive_free(m: Module, component, skip=()) -> None:
    """Drive every input of `component` (its `In` members, nested ones included) from a free
    value, except those whose path starts with a name in `skip`."""
    for path, member, value in component.signature.flatten(component):
        if member.flow != wiring.In or str(path[0]) in skip:
            continue
        value = value.as_value() if hasattr(value, "as_value") else value
        m.d.comb += value.eq(AnySeq(len(value)))


def crc16_ccitt_false(m: Module, data: list, crc=None):
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, most significant bit first, no
    final XOR) of the byte values `data`, one shift-register step per bit (each step's result a
    signal of `m`, which keeps the expressions small)."""
    crc = Const(0xFFFF, 16) if crc is None else crc
    for byte in data:
        for i in range(7, -1, -1):
            feedback = crc[15] ^ byte[i]
            after = Signal(16)
            m.d.comb += after.eq(Cat(feedback, crc[0:15]) ^ Mux(feedback, 0x1020, 0))
            crc = after
    return crc


def _phase_kind(geometry: ArrayGeometry):
    return ParallelPhase if geometry.parallel_count else Phase


class WrappingPE(ProcessingElement):
    """A serial PE whose permanence update wraps instead of saturating (a defect for
    `PermanenceProperty` to find)."""

    def learn_and_bump(self, m: Module, active, weak) -> None:
        """As `ProcessingElement.learn_and_bump`, without the clamps."""
        cfg, syn = self.config, self.synapse
        change = Mux(syn.potential & active, Mux(syn.prev_tap, cfg.perm_inc, -cfg.perm_dec), 0)
        bump = Mux(syn.potential & weak, cfg.perm_bump, 0)
        m.d.comb += syn.perm_next.eq((syn.perm + change + bump)[:cfg.perm_bits])


def ties_reversed(kinds):
    """PE cell kinds with every tie given to the other cell (a defect)."""
    return [(present, tuple(p and not lo for p, lo in zip(present, lower)))
            for present, lower in kinds]


class TiesReversedArray:
    """The cell array of `geometry`, its PEs built with `ties_reversed` kinds (a defect for
    `InhibitionProperty` to find)."""

    def __new__(cls, geometry: ArrayGeometry):
        base = array_class(geometry)
        pe_class = ParallelPE if geometry.parallel_count else ProcessingElement

        class Flawed(base):
            @classmethod
            def make_pe(cls, g, q):
                return pe_class(g.config, ties_reversed(pe_kind(g, q)), g.ring_positions,
                                g.separable)
        return Flawed(geometry)


class InhibitionProperty(Elaboratable):
    """SPEC 5 on all PEs of `geometry`'s array (its own PEs and neighbour wiring; every PE
    must show all its ring positions, as arrays of one or a few cells per PE do). The slot is
    assumed to follow the rings (it counts their rotations, as the sequencer's does).

    flaw ``ties_reversed``: the PEs are built believing every tie goes the other way."""

    def __init__(self, geometry: ArrayGeometry, flaw: str | None = None):
        self.geometry = geometry
        self.flaw = _check_flaw(self, flaw)
        if sorted(p % geometry.cells_per_pe for p in geometry.ring_positions) \
                != list(range(geometry.cells_per_pe)):
            raise ValueError("InhibitionProperty needs PEs whose rings are all shown "
                             f"(ring positions {geometry.ring_positions})")

    def elaborate(self, platform):
        g = self.geometry
        cfg = g.config
        P = g.cells_per_pe
        kind = _phase_kind(g)
        m = Module()
        array = (TiesReversedArray(g) if self.flaw == "ties_reversed" else array_class(g)(g))
        head = Signal(slot_shape(P))
        phases = Signal(kind, name="phases")
        m.d.comb += phases.as_value().eq(AnySeq(len(kind)))
        array.add_pes(m, head)
        for pe in array.pes:
            m.d.comb += pe.phase.as_value().eq(phases.as_value())
            drive_free(m, pe, skip=("slot", "links", "phase"))
        rotate = strobe(phases, kind.ROTATE)
        inhibit = strobe(phases, kind.INHIBIT)
        # the slot counts the rotations of the rings (cell `head` of every PE at the heads)
        turns = Signal(range(P), name="turns")
        with m.If(rotate):
            m.d.sync += turns.eq(Mux(turns == P - 1, 0, turns + 1))
        m.d.comb += Assume(head == turns)

        def boosted(c, t):
            """Cell c's boosted overlap when the rings have turned t times."""
            q, l = divmod(c, P)
            pos = (l - t) % P
            k = [p % P for p in g.ring_positions].index(pos)
            return array.pes[q].links.boosted_at[k]

        expected = []
        for q in range(g.num_pes):
            per_turn = []
            for t in range(P):
                c = g.pe_cells(q)[t]
                own = boosted(c, t)
                beats = [(boosted(n, t) > own) | ((boosted(n, t) == own) & (n < c))
                         for n in g.neighbours[c] if n is not None]
                beaten = sum(beats, Const(0, 4))
                per_turn.append((own != 0) & (beaten < cfg.winners))
            expected.append(Array(per_turn)[turns] if P > 1 else per_turn[0])
        # one cycle later the result is at the tail of the active ring
        started = Signal(name="started")
        fired = Signal(name="fired")
        want = Signal(g.num_pes, name="expected_active")
        m.d.sync += [started.eq(1), fired.eq(rotate & inhibit), want.eq(Cat(*expected))]
        for q, pe in enumerate(array.pes):
            with m.If(started & fired):
                m.d.comb += Assert(pe.state.actives[P - 1] == want[q],
                                   f"cell inhibition of PE {q} (SPEC 5)")
        return m


class DutyRangeProperty(Elaboratable):
    """SPEC 7 on PE `pe` of `geometry`'s array, every input free (its phases, its slot, its
    neighbours' duties); loads of duty words are assumed in ``0 .. 2^duty_bits`` (the host's
    state words).

    flaw ``unchecked_load``: loads are not assumed in range."""

    def __init__(self, geometry: ArrayGeometry, pe: int = 0, flaw: str | None = None):
        self.geometry = geometry
        self.pe = pe
        self.flaw = _check_flaw(self, flaw)

    def elaborate(self, platform):
        g = self.geometry
        cfg = g.config
        top = 1 << cfg.duty_bits
        m = Module()
        m.submodules.pe = pe = array_class(g).make_pe(g, self.pe)
        drive_free(m, pe)
        if self.flaw is None:
            for f, name in enumerate(("active_duty", "overlap_duty")):
                with m.If(pe.state.load[f]):
                    m.d.comb += Assume(pe.state.load_value[:cfg.duty_reg_bits] <= top)
        shown = [pe.state.active_duty, pe.state.overlap_duty]
        shown += list(pe.links.active_duty_at) + list(pe.links.overlap_duty_at)
        for value in shown:
            m.d.comb += Assert(value <= top, "duty cycle in 0 .. 2^D (SPEC 7)")
        return m


class PermanenceProperty(Elaboratable):
    """SPEC 3 and 6 on the permanence update of PE `pe` of `geometry`'s array (every synapse
    lane of a count-parallel PE), every input free.

    flaw ``wrapping_update`` (serial array only): the PE's update wraps (`WrappingPE`)."""

    def __init__(self, geometry: ArrayGeometry, pe: int = 0, flaw: str | None = None):
        self.geometry = geometry
        self.pe = pe
        self.flaw = _check_flaw(self, flaw)
        if flaw and geometry.parallel_count:
            raise ValueError("the wrapping_update flaw is a serial PE")

    def elaborate(self, platform):
        g = self.geometry
        cfg = g.config
        top = cfg.perm_max
        m = Module()
        if self.flaw == "wrapping_update":
            pe = WrappingPE(cfg, pe_kind(g, self.pe), g.ring_positions, g.separable,
                            g.ring_memory_min)
        else:
            pe = array_class(g).make_pe(g, self.pe)
        m.submodules.pe = pe
        drive_free(m, pe)
        synapses = synapse_ports(pe)

        def up(v, d):
            return Mux(v + d > top, top, v + d)

        def down(v, d):
            return Mux(v < d, 0, v - d)

        for syn in synapses:
            perm, nxt = syn.perm, syn.perm_next
            learned = Mux(syn.prev_tap, up(perm, cfg.perm_inc), down(perm, cfg.perm_dec))
            allowed = ((nxt == perm) | (nxt == learned) | (nxt == up(perm, cfg.perm_bump))
                       | (nxt == up(learned, cfg.perm_bump)))
            m.d.comb += [
                Assert(Mux(syn.potential, allowed, nxt == perm),
                       "permanence update saturates, never wraps (SPEC 3, 6)"),
                Assert(~(syn.potential & syn.prev_tap) | (nxt >= perm),
                       "an active input bit never lowers a permanence"),
            ]
        return m


class FrameCheckProperty(Elaboratable):
    """PROTOCOL.md's frame check on the receiver for `layout` (a small `max_payload`), every
    byte and handshake free. A reference CRC register follows the receiver's CRC unit byte by
    byte (restarted where the unit is, fed what it is fed) and must always equal it; the bytes
    fed must be bytes the receiver took; and a frame offered as accepted must be: the byte
    taken before the first one fed is the marker, the bytes fed are the 4 header bytes and the
    payload of the frame's length (its type, seq and length are the first four), exactly two
    bytes are taken after them, and those two are the reference CRC (the frame's check too).
    Each step is a one-byte comparison, so the proof needs no solver reasoning about the CRC of
    a whole frame.

    flaw ``other_crc``: the reference CRC starts from 0 instead of 0xFFFF (as a receiver with
    the wrong CRC would)."""

    def __init__(self, layout: ProtocolLayout, timeout: int = 2, flaw: str | None = None):
        self.layout = layout
        self.timeout = timeout
        self.flaw = _check_flaw(self, flaw)

    def elaborate(self, platform):
        most = self.layout.max_payload
        m = Module()
        receiver = FrameReceiver(self.layout, self.timeout)
        body = receiver.elaborate(platform)
        unit = body.submodules.crc
        m.submodules.receiver = body
        drive_free(m, receiver)
        rx = receiver.rx
        took = rx.valid & rx.ready
        start = 0 if self.flaw == "other_crc" else 0xFFFF
        # the reference CRC and what was fed to it since the unit's start
        reference = Signal(16, init=start, name="reference_crc")
        begun = Mux(unit.start, start, reference)
        stepped = crc16_ccitt_false(m, [unit.data], begun)
        m.d.sync += reference.eq(Mux(unit.valid, stepped, begun))
        fed = Signal(range(most + 6), name="fed")
        header = [Signal(8, name=f"header_{i}") for i in range(4)]
        fed_from = Mux(unit.start, 0, fed)
        with m.If(unit.valid):
            with m.If(fed_from < most + 5):
                m.d.sync += fed.eq(fed_from + 1)
            with m.Switch(fed_from):
                for i in range(4):
                    with m.Case(i):
                        m.d.sync += header[i].eq(unit.data)
        with m.Elif(unit.start):
            m.d.sync += fed.eq(0)
        # the bytes taken: the last two, the one before the first fed, how many since a feed
        last = [Signal(8, name=f"taken_{i}") for i in range(2)]
        lead = Signal(8, name="lead")
        after = Signal(range(4), name="taken_after_fed")
        with m.If(took):
            m.d.sync += [last[0].eq(last[1]), last[1].eq(rx.payload)]
            with m.If(unit.valid):
                m.d.sync += after.eq(0)
            with m.Elif(after < 3):
                m.d.sync += after.eq(after + 1)
        with m.If(unit.valid & (fed_from == 0)):
            m.d.sync += lead.eq(last[1])
        m.d.comb += [
            Assert(~unit.valid | (took & (unit.data == rx.payload)),
                   "the CRC unit is fed only bytes the receiver takes"),
            Assert(unit.crc == reference, "the CRC unit computes CRC-16/CCITT-FALSE"),
        ]
        frame = rx_frame = receiver.frames.payload
        with m.If(receiver.frames.valid & ~rx_frame.refused):
            m.d.comb += Assert(
                (lead == MARKER) & (fed == frame.length + 4) & (after == 2)
                & (frame.type.as_value() == header[0]) & (frame.seq == header[1])
                & (frame.length == Cat(header[2], header[3]))
                & (Cat(last[0], last[1]) == reference) & (frame.check == reference),
                "an accepted frame has a good CRC (PROTOCOL.md)")
        return m


class DispatchProperty(Elaboratable):
    """The dispatcher of `geometry`'s engine, every input free; the frames it is offered keep
    to the stream rules (a frame offered and not taken is offered again, unchanged).

    flaws: ``unstable_frames``, the frames need not keep to the stream rules (a frame could
    turn refused while its step is fed); ``seq_off_by_one``, the property is stated with the
    wrong expected number."""

    def __init__(self, geometry: ArrayGeometry, flaw: str | None = None):
        self.geometry = geometry
        self.flaw = _check_flaw(self, flaw)

    def elaborate(self, platform):
        g = self.geometry
        m = Module()
        # the array's signature only (its PEs as signatures, not built)
        array = array_class(g)(g, {q: ("pe", set()) for q in range(g.num_pes)})
        dispatcher = RequestDispatcher(g, array.signature)
        body = dispatcher.elaborate(platform)
        requests = body.submodules.requests
        m.submodules.dispatcher = body
        drive_free(m, dispatcher)
        frames = dispatcher.frames
        frame = frames.payload.as_value()
        if self.flaw != "unstable_frames":
            held = Signal(name="frame_held")
            last = Signal(len(frame), name="frame_last")
            m.d.sync += [held.eq(frames.valid & ~frames.ready), last.eq(frame)]
            with m.If(held):
                m.d.comb += Assume(frames.valid & (frame == last))
        payload = frames.payload
        expected = requests.expected + (1 if self.flaw == "seq_off_by_one" else 0)
        with m.If(requests.executed):
            m.d.comb += Assert(frames.valid & ~payload.refused
                               & ((payload.seq == expected[:8])
                                  | (payload.type == MessageType.IDENTIFY)),
                               "only the expected seq of an accepted frame is executed")
        # the next seq is expected after an execution, and only then
        was = Signal(8, name="expected_before")
        ran = Signal(name="executed_before")
        ran_seq = Signal(8, name="executed_seq")
        started = Signal(name="started")
        m.d.sync += [started.eq(1), was.eq(requests.expected), ran.eq(requests.executed),
                     ran_seq.eq(payload.seq)]
        with m.If(started):
            m.d.comb += Assert(requests.expected == Mux(ran, (ran_seq + 1)[:8], was),
                               "the expected seq moves on exactly when one is executed")
        acts = (requests.executed | dispatcher.array_reset | dispatcher.state_changed
                | dispatcher.command.valid | dispatcher.state_in.valid | dispatcher.inputs.valid
                | dispatcher.steps.valid | dispatcher.entries.valid)
        with m.If(frames.valid & payload.refused):
            m.d.comb += Assert(~acts, "a refused frame is never acted on")
        return m


# ----- the proofs `make test` and `cellsp bench formal` run

#: 3x3 cells (wrap: every cell has 8 neighbours, 3 winners) over a 6x6 input, 3x3 pools
SMALL = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1)

#: 3x5 cells (clip: corner, border and inner cells), one winner, large bumps
CLIPPED = SPConfig(input_shape=(8, 10), cell_shape=(3, 5), potential_radius=2, edge="clip",
                   winners=1, perm_bump=30, stimulus_threshold=1, duty_period_log2=2)

#: a protocol layout with 3-byte payloads at most (one-byte state words, one a chunk)
SMALL_FRAMES = ProtocolLayout(num_inputs=8, num_cells=4, state_words=2, state_word_bits=8,
                              chunk_words=1)

#: a protocol layout with 6-byte payloads at most
LONGER_FRAMES = ProtocolLayout(num_inputs=8, num_cells=4, state_words=8, state_word_bits=8,
                               chunk_words=4)


@dataclass(frozen=True)
class Proof:
    """One proof: a property on a design (`build` makes it), in `mode` to `depth`; `flaw`:
    the proof of a deliberately flawed design or environment, which must fail."""

    name: str
    design: str
    mode: str
    depth: int
    build: Callable[[], Elaboratable]
    flaw: str | None = None


def _geometry(cfg: SPConfig, cells_per_pe: int, kind: bool | str) -> ArrayGeometry:
    """The geometry of an array of `kind`: serial (False), count-parallel (True) or the
    row-wide serial array ("rows")."""
    return ArrayGeometry.for_config(cfg, cells_per_pe=cells_per_pe, parallel_count=kind is True,
                                    row_scan=kind == "rows")


def _array_words(cfg: SPConfig, cells_per_pe: int, kind: bool | str) -> str:
    h, w = cfg.cell_shape
    name = {False: "serial", True: "count-parallel", "rows": "row-wide serial"}[kind]
    return f"{h}x{w} {cfg.edge} {name}, {cells_per_pe} cell{'s' if cells_per_pe > 1 else ''}/PE"


def _inhibition(cfg, p, par, mode, depth, flaw=None):
    return Proof("inhibition", f"all PEs of {_array_words(cfg, p, par)}", mode, depth,
                 lambda: InhibitionProperty(_geometry(cfg, p, par), flaw), flaw)


def _duty(cfg, p, par, mode, depth, flaw=None):
    return Proof("duty-range", f"PE 0 of {_array_words(cfg, p, par)}", mode, depth,
                 lambda: DutyRangeProperty(_geometry(cfg, p, par), 0, flaw), flaw)


def _permanence(cfg, p, par, mode, depth, flaw=None):
    return Proof("permanence-saturates", f"PE 0 of {_array_words(cfg, p, par)}", mode, depth,
                 lambda: PermanenceProperty(_geometry(cfg, p, par), 0, flaw), flaw)


def _frames(layout, mode, depth, flaw=None):
    return Proof("frame-crc", f"receiver, payloads up to {layout.max_payload} bytes", mode,
                 depth, lambda: FrameCheckProperty(layout, 2, flaw), flaw)


def _dispatch(cfg, mode, depth, flaw=None):
    h, w = cfg.cell_shape
    return Proof("dispatch-seq-once", f"dispatcher of a {h}x{w} engine", mode, depth,
                 lambda: DispatchProperty(_geometry(cfg, 1, False), flaw), flaw)


def proof_plan(level: str) -> list[Proof]:
    """The proofs of `level`: ``quick`` (`make test`: each property once at a small size, and
    each once with a flaw, which must fail; about a minute on two cores) or ``long`` (`cellsp
    bench formal`: every property on both array kinds and larger sizes and depths)."""
    if level == "quick":
        return [
            _inhibition(SMALL, 3, False, "prove", 2),
            _duty(SMALL, 1, False, "prove", 2),
            _permanence(SMALL, 1, False, "prove", 2),
            _permanence(SMALL, 1, "rows", "prove", 2),
            _frames(SMALL_FRAMES, "bmc", 10),
            _dispatch(SMALL, "bmc", 8),
            _inhibition(SMALL, 1, False, "bmc", 6, "ties_reversed"),
            _duty(SMALL, 1, False, "bmc", 3, "unchecked_load"),
            _permanence(SMALL, 1, False, "bmc", 5, "wrapping_update"),
            _frames(SMALL_FRAMES, "bmc", 3, "other_crc"),
            _dispatch(SMALL, "bmc", 4, "unstable_frames"),
        ]
    if level == "long":
        return [
            _inhibition(SMALL, 1, False, "prove", 2),
            _inhibition(SMALL, 3, False, "prove", 2),
            _inhibition(SMALL, 1, True, "prove", 2),
            _inhibition(SMALL, 3, True, "prove", 2),
            _inhibition(CLIPPED, 1, False, "prove", 2),
            _inhibition(SMALL, 3, "rows", "prove", 2),
            _inhibition(SMALL, 3, False, "bmc", 20),
            _duty(SMALL, 1, False, "prove", 2),
            _duty(SMALL, 3, False, "prove", 2),
            _duty(SMALL, 1, True, "prove", 2),
            _duty(SMALL, 3, True, "prove", 2),
            _duty(CLIPPED, 1, False, "prove", 2),
            _duty(SMALL, 3, "rows", "prove", 2),
            _permanence(SMALL, 1, False, "prove", 2),
            _permanence(SMALL, 3, True, "prove", 2),
            _permanence(CLIPPED, 1, False, "prove", 2),
            _permanence(SMALL, 3, "rows", "prove", 2),
            _frames(SMALL_FRAMES, "bmc", 16),
            _frames(LONGER_FRAMES, "bmc", 16),
            _dispatch(SMALL, "bmc", 24),
            _dispatch(SMALL, "bmc", 40),
        ]
    raise ValueError(f"level must be quick or long, not {level!r}")
