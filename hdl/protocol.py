"""The protocol engine: the framed byte protocol of host/PROTOCOL.md in front of the cell array.

One engine for every target (Verilator, boards): bytes in on `rx`, bytes out on `tx`. Its parts,
joined by streams (and the cache and chunk memories between them)::

    rx -> FrameReceiver -frames-> RequestDispatcher -replies-> ReplySender -> tx
                                    |  ExecutedRequests             ^
                                    |  InputFeeder -> the array's inputs
                                    |  StateTransfer <-> the array's state words
                                    |-steps-> StepQueue -sending----'
                                    |            '-packing-> StepPacker <- the array's outputs
                                    '-entries-> (a FIFO) --------^

Their files (each imports only from those above it)::

    hdl/frames.py           the message enums, layouts and helpers they share
    hdl/frame_receiver.py   FrameReceiver
    hdl/dispatcher.py       RequestDispatcher, ExecutedRequests, InputFeeder, StateTransfer,
                            StateMover
    hdl/replies.py          StepQueue, StepPacker, ReplySender
    hdl/protocol.py         ProtocolEngine, which joins them (this file)

The receiver takes each whole frame into its buffer and checks its CRC before the dispatcher
sees it, so a damaged frame never reaches the array. The dispatcher executes the requests in
order. A new STEP is fed to the array and left to the packer (which puts the step's rows into
the reply cache) and the sender, while the receiver goes on to the next frame: with requests in
flight, the next input is received and fed while the array works (it keeps it in a shadow
plane) and the last reply goes out meanwhile (the array keeps its rows in a buffer). Any other
request, and any error, waits until the replies before it are out. Sequence numbers make
retries safe: a request is executed only when its number is the next expected one; a repeat of
an executed request (same number and check, a retry after a lost reply) gets the reply again
without being executed twice (STEP replies are kept for the last `reply_window` steps), and
another request with a used number is refused. A BATCH carries several inputs, fed one after
another; the packer folds their output maps into a running check (CRC-32) and count instead
of the cache, and after the last puts the BATCH's one reply (the count and the check) into the
cache as a STEP's. Every reply echoes its request's check and
carries the count of state changes (learning steps, loads, resets). A frame cut off midway is
dropped after `timeout` cycles without a byte.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import ProtocolLayout

from .array import CellArray
from .dispatcher import RequestDispatcher
from .frame_receiver import FrameReceiver
from .frames import cache_stride
from .replies import ReplySender, StepPacker, StepQueue

__all__ = ["ProtocolEngine"]


class ProtocolEngine(wiring.Component):
    """Protocol engine and cell array (`geometry`), behind two byte streams.

    Cycle budget of a STEP: frame in (1 byte a cycle when offered), the input fed to the array
    (one beat of `input_width` bits a cycle or so), the array's step, its rows packed into the
    reply, the reply out (1 byte a cycle when taken). With STEPs in flight, all but the array's
    step overlaps the steps before. `rx` is not ready while a request waits its turn or is
    executed, so a link without flow control (a UART) needs a FIFO in front.
    """

    def __init__(self, geometry: ArrayGeometry, timeout: int = 1 << 16,
                 array: CellArray | None = None, batching: bool = True):
        """`array`: the cell array to drive (for Verilog export, one built with `pe_modules`);
        `batching`: BATCH requests are executed (without, they are refused as an unknown type
        and IDENTIFY reports 0 inputs a BATCH)."""
        self.geometry = geometry
        self.batching = batching
        self.layout = ProtocolLayout.for_geometry(geometry, batching)
        self.timeout = timeout
        self.array = CellArray(geometry) if array is None else array
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        g, lay, array = self.geometry, self.layout, self.array
        window = lay.reply_window
        m = Module()
        m.submodules.receiver = receiver = FrameReceiver(lay, self.timeout)
        m.submodules.dispatcher = dispatcher = RequestDispatcher(g, array.signature,
                                                                 self.batching)
        m.submodules.queue = queue = StepQueue(window)
        m.submodules.packer = packer = StepPacker(g, array.signature.members["outputs"].flip(),
                                                  self.batching)
        m.submodules.sender = sender = ReplySender(g, self.batching)
        # every step fed to the array, in order, until it is packed (the array holds 4 at most)
        m.submodules.entries = entries = SyncFIFO(width=len(dispatcher.entries.payload.as_value()),
                                                  depth=window)
        m.submodules.array = ResetInserter(dispatcher.array_reset)(array)
        m.submodules.cache = cache = Memory(shape=8, depth=window * cache_stride(lay), init=[])
        m.submodules.chunk = chunk = Memory(shape=8, depth=lay.chunk_bytes, init=[])

        wiring.connect(m, wiring.flipped(self.rx), receiver.rx)
        wiring.connect(m, receiver.frames, dispatcher.frames)
        wiring.connect(m, receiver.buffer, dispatcher.buffer)
        for name in ("inputs", "command", "state_in", "state_out"):
            wiring.connect(m, getattr(dispatcher, name), getattr(array, name))
        wiring.connect(m, dispatcher.steps, queue.push)
        m.d.comb += [entries.w_en.eq(dispatcher.entries.valid),
                     entries.w_data.eq(dispatcher.entries.payload),
                     dispatcher.entries.ready.eq(entries.w_rdy),
                     packer.entries.valid.eq(entries.r_rdy),
                     packer.entries.payload.eq(entries.r_data),
                     entries.r_en.eq(packer.entries.ready)]
        wiring.connect(m, queue.packing, packer.jobs)
        wiring.connect(m, array.outputs, packer.rows)
        wiring.connect(m, packer.record, dispatcher.record)
        wiring.connect(m, cache.write_port(), packer.cache)
        wiring.connect(m, chunk.write_port(), dispatcher.chunk)
        wiring.connect(m, dispatcher.replies, sender.replies)
        wiring.connect(m, queue.sending, sender.steps)
        wiring.connect(m, cache.read_port(), sender.cache)
        wiring.connect(m, chunk.read_port(), sender.chunk)
        wiring.connect(m, sender.tx, wiring.flipped(self.tx))
        m.d.comb += [dispatcher.quiet.eq(sender.idle & ~packer.record.busy & queue.empty
                                         & ~entries.r_rdy),
                     dispatcher.room.eq(queue.room)]

        # state changes: learning steps applied, loads begun, resets (every reply carries it,
        # so a host sees any change of the array's state it did not ask for)
        changes = Signal(32)
        m.d.sync += changes.eq(changes + (dispatcher.state_changed | packer.state_changed))
        m.d.comb += [packer.changes.eq(changes), sender.changes.eq(changes)]
        return m
