"""The protocol engine: the framed byte protocol of host/PROTOCOL.md in front of the cell array.

One engine for every target (Verilator, boards): bytes in on `rx`, bytes out on `tx`. It
receives each whole frame into a buffer and checks its CRC before it touches the array, so a
damaged frame never reaches it. Three state machines share the work: the receiver takes the
requests in order and executes them, the packer puts each STEP's rows into the reply cache, the
sender sends the replies in order. A new STEP is fed to the array and left to the packer and
the sender while the receiver goes on to the next frame (the packer fills the next reply while
the sender sends the last): with requests in flight, the
next input is received and fed while the array works (it keeps it in a shadow plane) and the
last reply goes out meanwhile (the array keeps its rows in a buffer). Any other request, and any
error, waits until the replies before it are out. Sequence numbers make retries safe: a request is
executed only when its number is the next expected one; a repeat of an executed request (same
number and check, a retry after a lost reply) gets the reply again without being executed twice
(STEP replies are kept for the last `reply_window` steps), and another request with a used
number is refused. Every reply echoes its request's check and carries the count of state
changes (learning steps, loads, resets). A frame cut off midway is dropped after `timeout`
cycles without a byte.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cellsp.sim.wire import MARKER, PREFIX, Error, ProtocolLayout, Type

from .array import CellArray, Command
from cellsp.sim.geometry import ArrayGeometry

__all__ = ["ProtocolEngine", "crc16_byte"]


def crc16_byte(crc, byte):
    """CRC-16/CCITT-FALSE of one more byte, as logic (bitwise, MSB first)."""
    for i in range(7, -1, -1):
        top = crc[15] ^ byte[i]
        crc = Cat(Const(0, 1), crc[:15]) ^ Mux(top, 0x1021, 0)
        crc = crc[:16]
    return crc


class ProtocolEngine(wiring.Component):
    """Protocol engine and cell array (`geometry`), behind two byte streams.

    Cycle budget of a STEP: frame in (1 byte a cycle when offered), the input fed to the array
    (one beat of `input_width` bits a cycle or so), the array's step, its rows packed into the
    reply, the reply out (1 byte a cycle when taken). With STEPs in flight, all but the array's
    step overlaps the steps before. `rx` is not ready while a request waits its turn or is
    executed, so a link without flow control (a UART) needs a FIFO in front.
    """

    def __init__(self, geometry: ArrayGeometry, timeout: int = 1 << 16,
                 array: CellArray | None = None):
        """`array`: the cell array to drive (for Verilog export, one built with `pe_modules`)."""
        self.geometry = geometry
        self.layout = ProtocolLayout.for_geometry(geometry)
        self.timeout = timeout
        self.array = CellArray(geometry) if array is None else array
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        g, lay = self.geometry, self.layout
        cfg = g.config
        m = Module()
        array = self.array
        array_reset = Signal()
        m.submodules.array = ResetInserter(array_reset)(array)

        wb = lay.word_bytes
        max_payload = lay.max_payload
        window = lay.reply_window
        stride = 1 << (lay.step_reply - 1).bit_length()

        # the payload, two bytes a word: a STEP's input is fed 16 bits a cycle
        rxbuf = Memory(shape=16, depth=(max_payload + 1) // 2, init=[])
        cache = Memory(shape=8, depth=window * stride, init=[])
        chunk = Memory(shape=8, depth=lay.chunk_bytes, init=[])
        # each cached step's check: written when the step is taken, read by the packer (into
        # the step's reply) and, when all is quiet, to compare a retry with
        # (entry `window`: the last other request's)
        checks = Memory(shape=16, depth=window + 1, init=[])
        m.submodules.rxbuf, m.submodules.cache, m.submodules.chunk = rxbuf, cache, chunk
        m.submodules.checks = checks
        rx_w, rx_r = rxbuf.write_port(granularity=8), rxbuf.read_port()
        ca_w, ca_r = cache.write_port(), cache.read_port()
        ch_w, ch_r = chunk.write_port(), chunk.read_port()
        ck_w, ck_r = checks.write_port(), checks.read_port()

        # ------------------------------------------------------------ request registers
        rtype = Signal(8)
        rseq = Signal(8)
        rlen = Signal(16)
        count = Signal(16)             # bytes received in the current field
        crc = Signal(16)
        crc_lo = Signal(8)
        idle_cycles = Signal(range(self.timeout + 1))
        have_seq = Signal()            # the seq byte of the current frame has been received

        expected = Signal(8)           # the next sequence number to execute
        cache_seq = Array(Signal(8, name=f"cache_seq_{i}") for i in range(window))
        cache_ok = Signal(window)
        cache_learn = Signal(window)   # each cached step's learn flag
        # state changes: learning steps applied, loads begun, resets (every reply carries it,
        # so a host sees any change of the array's state it did not ask for)
        changes = Signal(32)
        bump = Signal()                # one more state change (never two in a cycle)
        m.d.sync += changes.eq(changes + bump)
        loading = Signal()
        reading = Signal()
        next_chunk = Signal(16)        # loading: the chunk expected next
        held_chunk = Signal(16, init=0xFFFF)   # reading: the chunk in the buffer
        held_words = Signal(range(lay.chunk_words + 1))

        # ------------------------------------------------------------ reply registers
        # Set by the receiver for its own replies (only when `quiet`; it raises `send_req`) or
        # by the sender for a STEP's; read by the sender while it sends.
        ttype = Signal(8)
        tseq = Signal(8)
        tlen = Signal(16)
        tsource = Signal(2)   # 0: `small` only, 1: cache slot, 2: `small` then chunk, 3: identify
        small = Array(Signal(8, name=f"small_{i}") for i in range(3))
        small_len = Signal(2)
        tanon = Signal()               # the reply answers no request (its check is 0)
        tslot = Signal(range(window))
        ti = Signal(16)                # byte index in the frame being sent
        tcrc = Signal(16)
        send_req = Signal()            # the receiver's reply is in the registers, not yet sent

        # ------------------------------------------------------------ steps in flight
        # New STEPs fed to the array whose replies the sender has not yet put in the cache.
        # Only new STEPs are taken while any is in flight, so their sequence numbers run on
        # from the oldest, `job_seq`. Fewer than `window` keeps their cache slots apart (the
        # array holds 4 at most: the input fed, the one it works on, its rows buffer and the
        # rows being packed).
        jobs = Signal(range(window))
        job_seq = Signal(8)
        # STEP replies packed into the cache but not yet sent: the packer fills the next one
        # while the sender sends the last
        unsent = Signal(range(window))
        unsent_take = Signal()         # the sender starts the oldest unsent reply
        sender_idle = Signal()
        packer_idle = Signal()
        quiet = Signal()               # no step in flight and no reply pending or being sent
        m.d.comb += quiet.eq(sender_idle & packer_idle & ~send_req & (jobs == 0) & (unsent == 0))
        fault = Signal(8)              # the error code of a frame refused while not `quiet`
        job_push = Signal()            # the receiver has fed a new step's last beat
        job_done = Signal()            # the sender has put the oldest step's reply in the cache
        m.d.sync += [jobs.eq(jobs + job_push - job_done),
                     unsent.eq(unsent + job_done - unsent_take)]
        with m.If(job_done):
            m.d.sync += job_seq.eq(job_seq + 1)
        with m.Elif(job_push & (jobs == 0)):
            m.d.sync += job_seq.eq(rseq)

        identify = list(ProtocolLayout.identify_payload(g))

        def set_reply(m, type_, payload_len, source=0, smalls=(), seq=rseq, anon=False):
            """`payload_len` counts the payload after the prefix (a cache slot holds its own)."""
            m.d.sync += [ttype.eq(type_), tseq.eq(seq),
                         tlen.eq(payload_len + (0 if source == 1 else PREFIX)),
                         tsource.eq(source), ti.eq(0), tcrc.eq(0xFFFF),
                         small_len.eq(len(smalls)), tanon.eq(anon)]
            for i, v in enumerate(smalls):
                m.d.sync += small[i].eq(v)

        def reply(m, type_, payload_len, source=0, smalls=(), **kwargs):
            """The receiver's reply (only when `quiet`, so `changes` counts every step): the
            sender sends it next, and the receiver waits until it is out (its prefix is the
            request's check, `crc`, and `changes`, which stay as they are meanwhile)."""
            set_reply(m, type_, payload_len, source, smalls, **kwargs)
            m.d.sync += send_req.eq(1)
            m.next = "REPLY"

        def error(m, code):
            """The request (rtype, rseq, check crc) is refused: nothing of it was executed."""
            reply(m, Type.ERROR, 3, 0, (code, expected, rtype))

        def executed(m, step=False):
            """The request is executed: the next sequence number is expected, and a retry of
            this request (the same check) is answered from then on."""
            m.d.sync += expected.eq(rseq + 1)
            m.d.comb += [ck_w.addr.eq(slot if step else window), ck_w.data.eq(crc),
                         ck_w.en.eq(1)]

        def refuse(m, code):
            """An error found while receiving a frame (its type and seq may be damaged): replied
            once the replies before it are out, as an answer to no request."""
            m.d.sync += fault.eq(code)
            m.next = "FAULT"

        # ------------------------------------------------------------ step plumbing
        iw = g.input_width
        acc = Signal(iw + 16)          # input bits from rxbuf words, taken `iw` at a time
        nacc = Signal(range(iw + 17))
        idx = Signal(16)               # byte index into rxbuf / cache / chunk
        beat = Signal(range(g.beats_per_input + 1))
        learn = Signal()
        h, w = cfg.cell_shape
        oacc = Signal(w + 8)
        onacc = Signal(range(w + 9))
        orow = Signal(range(h + 1))
        obyte = Signal(range(stride + 1))
        cycles = Signal(32)
        words_left = Signal(range(lay.state_words + 1))
        word = Signal(8 * wb)
        wbyte = Signal(range(wb + 1))

        def slot_of(seq):
            return seq[:max(1, (window - 1).bit_length())] if window > 1 else Const(0, 1)
        slot = slot_of(rseq)                   # the request's cache slot
        job_slot = slot_of(job_seq)            # the oldest step in flight's
        # the packer's slot while it packs, else (when quiet too) the request's
        m.d.comb += ck_r.addr.eq(Mux(packer_idle, Mux(rtype == Type.STEP, slot, window),
                                     job_slot))
        job_base = Cat(Const(0, (stride - 1).bit_length()), job_slot)     # job_slot * stride

        def byte_of(value, i):
            """Byte i of a word (little-endian)."""
            return value.word_select(i[:max(1, (wb - 1).bit_length())], 8) if wb > 1 else value
        rx_raddr = Signal(range(max_payload + 1))      # a byte address
        rx_high = Signal()                             # rx_byte is the word's high byte
        m.d.comb += rx_r.addr.eq(rx_raddr >> 1)
        m.d.sync += rx_high.eq(rx_raddr[0])
        rx_byte = rx_r.data.word_select(rx_high, 8)    # rxbuf byte rx_raddr, a cycle later

        new = rseq == expected
        behind = (expected - rseq)[:8]
        retry = (behind >= 1) & (behind <= window)
        # a retry of the last request (not a step; its check read in TURN, kept until a write)
        same_last = (behind == 1) & (ck_r.data == crc)
        taken = Mux(behind == 1, Error.CONFLICT, Error.OUT_OF_ORDER)   # a stale or foreign seq

        m.d.comb += self.rx.ready.eq(0)
        with m.FSM(init="HUNT"):
            with m.State("HUNT"):
                m.d.comb += self.rx.ready.eq(1)
                m.d.sync += [count.eq(0), crc.eq(0xFFFF), idle_cycles.eq(0), have_seq.eq(0)]
                with m.If(self.rx.valid & (self.rx.payload == MARKER)):
                    m.next = "HEADER"

            def timed(m):
                """Count idle cycles inside a frame; drop it after `timeout`."""
                with m.If(self.rx.valid):
                    m.d.sync += idle_cycles.eq(0)
                with m.Elif(idle_cycles == self.timeout):
                    with m.If(have_seq):
                        refuse(m, Error.TIMEOUT)
                    with m.Else():
                        m.next = "HUNT"
                with m.Else():
                    m.d.sync += idle_cycles.eq(idle_cycles + 1)

            with m.State("HEADER"):
                m.d.comb += self.rx.ready.eq(1)
                timed(m)
                with m.If(self.rx.valid):
                    b = self.rx.payload
                    m.d.sync += [crc.eq(crc16_byte(crc, b)), count.eq(count + 1)]
                    with m.Switch(count):
                        with m.Case(0):
                            m.d.sync += rtype.eq(b)
                        with m.Case(1):
                            m.d.sync += [rseq.eq(b), have_seq.eq(1)]
                        with m.Case(2):
                            m.d.sync += rlen[:8].eq(b)
                        with m.Case(3):
                            length = Cat(rlen[:8], b)
                            m.d.sync += [rlen.eq(length), count.eq(0)]
                            with m.If(length > max_payload):
                                refuse(m, Error.TOO_LONG)
                            with m.Elif(length == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                m.d.comb += self.rx.ready.eq(1)
                timed(m)
                m.d.comb += [rx_w.addr.eq(count >> 1), rx_w.data.eq(self.rx.payload.replicate(2)),
                             rx_w.en.eq(Mux(self.rx.valid, Mux(count[0], 0b10, 0b01), 0))]
                with m.If(self.rx.valid):
                    m.d.sync += [crc.eq(crc16_byte(crc, self.rx.payload)), count.eq(count + 1)]
                    with m.If(count == rlen - 1):
                        m.d.sync += count.eq(0)
                        m.next = "CRC"

            with m.State("CRC"):
                m.d.comb += self.rx.ready.eq(1)
                timed(m)
                with m.If(self.rx.valid):
                    with m.If(count == 0):
                        m.d.sync += [crc_lo.eq(self.rx.payload), count.eq(1)]
                    with m.Elif(Cat(crc_lo, self.rx.payload) != crc):
                        refuse(m, Error.BAD_CRC)
                    with m.Else():
                        m.next = "TURN"

            with m.State("REPLY"):
                with m.If(~send_req):
                    m.next = "HUNT"

            with m.State("FAULT"):
                with m.If(quiet):
                    reply(m, Type.ERROR, 3, 0, (fault, expected, Type.NONE), seq=0, anon=True)

            with m.State("TURN"):
                # A new step goes to the array at once (its reply follows those in flight); any
                # other request waits until the replies before it are out (it may reply at once,
                # and a retry must find its step's reply in the cache).
                step_now = ((rtype == Type.STEP) & (rlen == lay.step_request) & new
                            & ~loading & ~reading & (jobs + unsent < window - 1))
                with m.If(quiet | step_now):
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                def length_is(n):
                    return rlen == n
                with m.Switch(rtype):
                    with m.Case(Type.IDENTIFY):
                        with m.If(~length_is(0)):
                            error(m, Error.BAD_LENGTH)
                        with m.Else():
                            executed(m)
                            m.d.sync += cache_ok.eq(0)
                            reply(m, Type.IDENTIFY | Type.REPLY, len(identify) + 3, 3)
                    with m.Case(Type.STEP):
                        with m.If(~length_is(lay.step_request)):
                            error(m, Error.BAD_LENGTH)
                        with m.Elif(new & (loading | reading)):
                            error(m, Error.BAD_STATE)
                        with m.Elif(new):
                            executed(m, step=True)
                            m.d.sync += [cache_ok.bit_select(slot, 1).eq(0),
                                         cache_seq[slot].eq(rseq),
                                         idx.eq(2), beat.eq(0)]
                            m.d.comb += rx_raddr.eq(0)
                            m.next = "STEP_FLAGS"
                        with m.Elif(retry & cache_ok.bit_select(slot, 1)
                                    & (cache_seq[slot] == rseq)):
                            # the step that ran with this seq: this one, or another's
                            with m.If(ck_r.data == crc):       # (read in TURN)
                                m.d.sync += tslot.eq(slot)
                                reply(m, Type.STEP | Type.REPLY, lay.step_reply, 1)
                            with m.Else():
                                error(m, Error.CONFLICT)
                        with m.Else():
                            error(m, Error.OUT_OF_ORDER)
                    with m.Case(Type.LOAD_BEGIN, Type.READ_BEGIN, Type.RESET):
                        with m.If(~length_is(0)):
                            error(m, Error.BAD_LENGTH)
                        with m.Elif(~new & same_last):
                            reply(m, rtype | Type.REPLY, 0)
                        with m.Elif(~new):
                            error(m, taken)
                        with m.Elif(rtype == Type.RESET):
                            m.d.comb += array_reset.eq(1)
                            executed(m)
                            m.d.comb += bump.eq(1)
                            m.d.sync += [loading.eq(0), reading.eq(0)]
                            reply(m, Type.RESET | Type.REPLY, 0)
                        with m.Elif(loading | reading):
                            error(m, Error.BAD_STATE)
                        with m.Else():
                            executed(m)
                            m.next = "COMMAND"
                    with m.Case(Type.LOAD_CHUNK):
                        m.d.comb += rx_raddr.eq(0)
                        m.next = "CHUNK_INDEX"
                    with m.Case(Type.READ_CHUNK):
                        with m.If(~length_is(2)):
                            error(m, Error.BAD_LENGTH)
                        with m.Elif(~new & ~same_last):
                            error(m, taken)
                        with m.Else():
                            m.d.comb += rx_raddr.eq(0)
                            m.next = "CHUNK_INDEX"
                    with m.Default():
                        error(m, Error.UNKNOWN_TYPE)

            # ---------------------------------------------------------- STEP
            with m.State("STEP_FLAGS"):
                # rxbuf's first word: the flags, and the input's first byte
                m.d.sync += [learn.eq(rx_r.data[0]), acc.eq(rx_r.data[8:]), nacc.eq(8),
                             cache_learn.bit_select(slot, 1).eq(rx_r.data[0])]
                m.d.comb += rx_raddr.eq(2)
                m.next = "STEP_FEED"

            with m.State("STEP_FEED"):
                # rx_r.data holds rxbuf[idx] and rxbuf[idx + 1] (idx even); top up the
                # accumulator with both, offer full beats (a word is taken in the same cycle as
                # a beat leaves: a cycle a beat of up to 16 bits). Past the payload's last byte
                # the word's other byte is counted but never offered: the beats end before it.
                m.d.comb += [array.inputs.payload.bits.eq(acc[:iw]),
                             array.inputs.payload.learn.eq(learn),
                             array.inputs.valid.eq(nacc >= iw)]
                shifted = Mux(array.inputs.valid & array.inputs.ready, acc >> iw, acc)
                left = Signal.like(nacc)
                m.d.comb += left.eq(Mux(array.inputs.valid & array.inputs.ready, nacc - iw, nacc))
                take = (left < iw) & (idx <= lay.step_request - 1)
                m.d.comb += rx_raddr.eq(Mux(take, idx + 2, idx))
                with m.If(take):
                    m.d.sync += [acc.eq(shifted | (rx_r.data << left)), nacc.eq(left + 16),
                                 idx.eq(idx + 2)]
                with m.Else():
                    m.d.sync += [acc.eq(shifted), nacc.eq(left)]
                with m.If(array.inputs.valid & array.inputs.ready):
                    with m.If(beat == g.beats_per_input - 1):
                        # in flight: the sender replies; on to the next frame
                        m.d.comb += job_push.eq(1)
                        m.next = "HUNT"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)

            # ---------------------------------------------------------- LOAD / READ begin
            with m.State("COMMAND"):
                m.d.comb += [array.command.valid.eq(1),
                             array.command.payload.eq(Mux(rtype == Type.LOAD_BEGIN,
                                                          Command.LOAD_STATE,
                                                          Command.READ_STATE))]
                with m.If(array.command.ready):
                    m.d.sync += [words_left.eq(lay.state_words), next_chunk.eq(0),
                                 held_chunk.eq(0xFFFF)]
                    with m.If(rtype == Type.LOAD_BEGIN):
                        m.d.comb += bump.eq(1)
                        m.d.sync += loading.eq(1)
                    with m.Else():
                        m.d.sync += reading.eq(1)
                    reply(m, rtype | Type.REPLY, 0)

            # ---------------------------------------------------------- LOAD_CHUNK
            index = Signal(16)
            chunk_words = Signal(range(lay.chunk_words + 1))

            def read_chunk(m, full, size):
                """READ_CHUNK `full`: the held chunk again, or the next one from the array."""
                with m.If(full == held_chunk):
                    with m.If(new):
                        executed(m)
                    reply(m, Type.READ_CHUNK | Type.REPLY, 2 + held_words * wb, 2,
                          (full[:8], full[8:]))
                with m.Elif(~new | ~reading | (full != (held_chunk + 1)[:16])):
                    error(m, Error.BAD_STATE)
                with m.Else():
                    executed(m)
                    m.d.sync += [chunk_words.eq(size), idx.eq(0), wbyte.eq(0),
                                 held_words.eq(size), held_chunk.eq(full)]
                    m.next = "READ_WORDS"
            with m.State("CHUNK_INDEX"):
                # the chunk index of a LOAD_CHUNK or READ_CHUNK: rxbuf's first word (registered
                # before it is compared: the memory's read is a long path on a board)
                m.d.sync += index.eq(rx_r.data)
                m.next = "CHUNK_CHECK"

            with m.State("CHUNK_CHECK"):
                size = Mux(words_left < lay.chunk_words, words_left, lay.chunk_words)
                with m.If(rtype == Type.READ_CHUNK):
                    read_chunk(m, index, size)
                with m.Elif(~new & same_last & (index == next_chunk - 1)):
                    reply(m, Type.LOAD_CHUNK | Type.REPLY, 2, 0, (index[:8], index[8:]))
                with m.Elif(~new):
                    error(m, taken)
                with m.Elif(~loading | (index != next_chunk)):
                    error(m, Error.BAD_STATE)
                with m.Elif(rlen != 2 + size * wb):
                    error(m, Error.BAD_LENGTH)
                with m.Else():
                    executed(m)
                    m.d.sync += [chunk_words.eq(size), idx.eq(2), wbyte.eq(0)]
                    m.d.comb += rx_raddr.eq(2)
                    m.next = "LOAD_WORDS"

            with m.State("LOAD_WORDS"):
                # assemble little-endian words from rxbuf[idx], offer each on state_in
                whole = wbyte == wb
                m.d.comb += [array.state_in.valid.eq(whole),
                             array.state_in.payload.eq(word)]
                advance = ~whole
                m.d.comb += rx_raddr.eq(Mux(advance, idx + 1, idx))
                with m.If(advance):
                    m.d.sync += [byte_of(word, wbyte).eq(rx_byte),
                                 wbyte.eq(wbyte + 1), idx.eq(idx + 1)]
                with m.If(whole & array.state_in.ready):
                    m.d.sync += [wbyte.eq(0), word.eq(0), chunk_words.eq(chunk_words - 1),
                                 words_left.eq(words_left - 1)]
                    with m.If(chunk_words == 1):
                        m.d.sync += next_chunk.eq(next_chunk + 1)
                        with m.If(words_left == 1):
                            m.d.sync += loading.eq(0)
                        reply(m, Type.LOAD_CHUNK | Type.REPLY, 2, 0, (index[:8], index[8:]))

            # ---------------------------------------------------------- READ_CHUNK

            with m.State("READ_WORDS"):
                # each state_out word into wb bytes of the chunk buffer
                m.d.comb += array.state_out.ready.eq(wbyte == wb - 1)
                with m.If(array.state_out.valid):
                    m.d.comb += [ch_w.addr.eq(idx), ch_w.en.eq(1),
                                 ch_w.data.eq(byte_of(array.state_out.payload, wbyte))]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(wbyte == wb - 1):
                        m.d.sync += [wbyte.eq(0), chunk_words.eq(chunk_words - 1),
                                     words_left.eq(words_left - 1)]
                        with m.If(chunk_words == 1):
                            with m.If(words_left == 1):
                                m.d.sync += reading.eq(0)
                            reply(m, Type.READ_CHUNK | Type.REPLY, 2 + held_words * wb, 2,
                                  (index[:8], index[8:]))
                    with m.Else():
                        m.d.sync += wbyte.eq(wbyte + 1)

        # ------------------------------------------------------------ the packer
        # the array's rows of the oldest step in flight into its cache slot, then its cycles
        with m.FSM(init="IDLE", name="packer"):
            with m.State("IDLE"):
                m.d.comb += packer_idle.eq(1)
                with m.If(jobs != 0):
                    m.d.sync += [orow.eq(0), onacc.eq(0), oacc.eq(0), obyte.eq(PREFIX + 4)]
                    m.next = "STEP_ROWS"

            with m.State("STEP_ROWS"):
                # rows of active cells into bytes of the cache slot (after 4 bytes of cycles).
                # Exactly h rows: were the packer the slower, the array would publish the next
                # step's rows as soon as this step's last row is taken; they are the next job's.
                # (Since the packer no longer waits for the sender it outpaces the array, so no
                # test reaches this guard; it stays, as the old hang came from its absence.)
                more = orow != h
                # a byte out and a row in may share a cycle: 2 cycles a row of up to 16 cells
                write = onacc >= 8
                left = Mux(write, onacc - 8, onacc).as_unsigned()
                kept = Mux(write, oacc >> 8, oacc)
                m.d.comb += array.outputs.ready.eq(more & (left <= 8))
                with m.If(write):
                    m.d.comb += [ca_w.addr.eq(job_base + obyte), ca_w.data.eq(oacc[:8]),
                                 ca_w.en.eq(1)]
                    m.d.sync += obyte.eq(obyte + 1)
                with m.If(array.outputs.valid & array.outputs.ready):
                    m.d.sync += [oacc.eq(kept | (array.outputs.payload.active << left)),
                                 onacc.eq(left + w), orow.eq(orow + 1)]
                    with m.If(orow == 0):
                        m.d.sync += cycles.eq(array.outputs.payload.cycles)
                with m.Elif(write):
                    m.d.sync += [oacc.eq(kept), onacc.eq(left)]
                with m.Elif(orow == h):
                    with m.If(onacc != 0):      # the last, partial byte
                        m.d.comb += [ca_w.addr.eq(job_base + obyte), ca_w.data.eq(oacc[:8]),
                                     ca_w.en.eq(1)]
                    m.d.sync += obyte.eq(0)
                    m.next = "STEP_CYCLES"

            with m.State("STEP_CYCLES"):
                # the slot's first bytes: the prefix (the request's check, the state changes
                # with this step's learning), then the step's cycles
                # (the step's learning counts from the first cycle: the count's bytes follow)
                with m.If(obyte == 0):
                    m.d.comb += bump.eq(cache_learn.bit_select(job_slot, 1))
                head = Cat(ck_r.data, changes, cycles)
                m.d.comb += [ca_w.addr.eq(job_base + obyte), ca_w.en.eq(1),
                             ca_w.data.eq(head.word_select(obyte[:4], 8))]
                m.d.sync += obyte.eq(obyte + 1)
                with m.If(obyte == PREFIX + 3):
                    m.d.sync += cache_ok.bit_select(job_slot, 1).eq(1)
                    m.d.comb += job_done.eq(1)
                    m.next = "IDLE"

        # ------------------------------------------------------------ the sender
        with m.FSM(init="IDLE", name="sender"):
            with m.State("IDLE"):
                m.d.comb += sender_idle.eq(1)
                send_seq = (job_seq - unsent)[:8]      # the oldest packed, unsent step
                with m.If(send_req):                  # the receiver's reply (only when quiet)
                    m.next = "SEND"
                with m.Elif(unsent != 0):
                    m.d.comb += unsent_take.eq(1)
                    m.d.sync += tslot.eq(slot_of(send_seq))
                    set_reply(m, Type.STEP | Type.REPLY, lay.step_reply, 1, seq=send_seq)
                    m.next = "SEND"

            with m.State("SEND"):
                # frame byte `ti`: marker, type, seq, length (2), payload, CRC (2)
                pay = ti - 5
                end = 5 + tlen
                advance = self.tx.ready
                nxt = Mux(advance, ti + 1, ti) - 5        # next payload index (memories)
                m.d.comb += [ca_r.addr.eq(Cat(nxt[:(stride - 1).bit_length()], tslot)),
                             ch_r.addr.eq(nxt - PREFIX - 2)]
                # a cache slot holds its whole payload; the others: the prefix, then `small`,
                # the chunk buffer, or IDENTIFY's bytes and status (a load or a read-back going
                # on, the chunk last read)
                q = (pay - PREFIX)[:16]
                prefix = Cat(Mux(tanon, 0, crc), changes).word_select(pay[:3], 8)
                ident = Array([Const(b, 8) for b in identify]
                              + [Cat(loading, reading), held_chunk[:8], held_chunk[8:]])[q[:8]]
                rest = Mux(q < small_len, small[q[:2]],
                           Array([small[q[:2]], ca_r.data, ch_r.data, ident])[tsource])
                payload_byte = Mux(tsource == 1, ca_r.data, Mux(pay < PREFIX, prefix, rest))
                byte = Signal(8)
                with m.If(ti == 0):
                    m.d.comb += byte.eq(MARKER)
                with m.Elif(ti == 1):
                    m.d.comb += byte.eq(ttype)
                with m.Elif(ti == 2):
                    m.d.comb += byte.eq(tseq)
                with m.Elif(ti == 3):
                    m.d.comb += byte.eq(tlen[:8])
                with m.Elif(ti == 4):
                    m.d.comb += byte.eq(tlen[8:])
                with m.Elif(ti < end):
                    m.d.comb += byte.eq(payload_byte)
                with m.Elif(ti == end):
                    m.d.comb += byte.eq(tcrc[:8])
                with m.Else():
                    m.d.comb += byte.eq(tcrc[8:])
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(byte)]
                with m.If(advance):
                    m.d.sync += ti.eq(ti + 1)
                    with m.If((ti != 0) & (ti < end)):
                        m.d.sync += tcrc.eq(crc16_byte(tcrc, byte))
                    with m.If(ti == end + 1):
                        m.d.sync += send_req.eq(0)
                        m.next = "IDLE"
        return m
