"""What a simulation of the cell array is asked to do, and what comes back: shared by the
Amaranth and Verilator runners (and the host transports that drive the same streams)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.golden import SPState, check_inputs

__all__ = ["Operation", "StepResult", "Results", "input_beats", "StreamPacing", "StreamPort",
           "feed", "collect", "decode_row", "wait_limit_cycles"]


@dataclass
class Operation:
    """One thing to do to the array: kind is 'step', 'load', 'read', 'reset', or 'interrupt'
    (send the input x, wait `ticks` cycles, then reset: a reset in the middle of a step)."""
    kind: str
    x: np.ndarray | None = None
    learn: bool = False
    state: SPState | None = None
    ticks: int = 0


@dataclass
class StepResult:
    """The active map (H, W) of one step and its cycle count."""
    active: np.ndarray
    cycles: int


@dataclass
class Results:
    """What came out of a run: one StepResult per 'step', one SPState per 'read'."""
    steps: list[StepResult] = field(default_factory=list)
    states: list[SPState] = field(default_factory=list)
    failure: str | None = None
    #: clock cycle at which each step's last row was taken (Verilator runs)
    cycle_stamps: list[int] = field(default_factory=list)

    def active_maps(self) -> np.ndarray:
        """The steps' active maps, (T, H, W) bool, in the order they came."""
        return np.array([step.active for step in self.steps], dtype=bool)


def input_beats(geometry: ArrayGeometry, x: np.ndarray) -> list[int]:
    """The input stream's `bits` payloads for one input, raster order, input_width a beat."""
    flat = np.asarray(x).reshape(-1).astype(np.uint64)
    w = geometry.input_width
    return [int(sum(int(flat[b * w + i]) << i for i in range(w)))
            for b in range(geometry.beats_per_input)]


class StreamPacing:
    """The idle and back-pressure pattern of one run, decided cycle by cycle from a seed.

    idle: probability that a source idles for a cycle before offering its next beat (inputs,
    commands, state words); stall: probability that a sink holds `ready` low on a cycle while it
    waits for a beat (outputs, read-back). Every stream driver of a run draws from this one
    sequence in the order it asks, so the same seed and the same run give the same pattern.
    """

    def __init__(self, idle: float = 0.0, stall: float = 0.0, seed: int = 0):
        for name, probability in (("idle", idle), ("stall", stall)):
            if not 0.0 <= probability < 1.0:
                raise ValueError(f"{name} = {probability} must be in [0, 1) (1 would never "
                                 f"move a beat)")
        self.idle, self.stall = idle, stall
        self.rng = random.Random(seed)

    def idles(self) -> bool:
        """Whether the source waits this cycle instead of offering its beat."""
        return self.rng.random() < self.idle

    def ready(self) -> bool:
        """Whether the sink takes a beat this cycle."""
        return self.rng.random() >= self.stall


def wait_limit_cycles(geometry: ArrayGeometry) -> int:
    """How many cycles a sink waits for a beat before it raises instead of hanging: twenty
    times a whole state read-back plus a thousand cycles, far beyond any step's latency."""
    return 20 * (geometry.state_words + 1000)


class StreamPort:
    """The array's streams ('inputs', 'outputs', 'command', 'state_in', 'state_out') as one
    simulator drives them, for the shared run plan (`feed`, `collect`).

    `put` and `get` apply the run's `StreamPacing` here, once for every simulator; an adapter
    (Amaranth, cocotb) implements the cycle-level primitives `offer`, `sink_cycle`, `tick`,
    `reset` and `now` in a few lines each.
    """

    def __init__(self, geometry: ArrayGeometry, pacing: StreamPacing):
        self.geometry, self.pacing = geometry, pacing
        self.wait_limit_cycles = wait_limit_cycles(geometry)

    async def put(self, stream: str, value: int) -> None:
        """Offer `value` on `stream`, after the idle cycles the pacing draws, until the array
        takes it."""
        while self.pacing.idles():
            await self.tick()
        await self.offer(stream, value)

    async def get(self, stream: str) -> int:
        """The next payload taken from `stream`, `ready` drawn by the pacing each cycle; raise
        TimeoutError after `wait_limit_cycles` cycles rather than wait for ever."""
        for _ in range(self.wait_limit_cycles):
            payload = await self.sink_cycle(stream, self.pacing.ready())
            if payload is not None:
                return payload
        raise TimeoutError(f"nothing on {stream} from the array within "
                           f"{self.wait_limit_cycles} cycles")

    async def offer(self, stream: str, value: int) -> None:
        """Hold `valid` high with `value` until the clock edge at which `ready` is high, then
        drop `valid`."""
        raise NotImplementedError

    async def sink_cycle(self, stream: str, ready: bool) -> int | None:
        """One clock cycle with `ready` as given: the payload if a beat was taken (then `ready`
        drops), else None."""
        raise NotImplementedError

    async def tick(self) -> None:
        """One clock cycle."""
        raise NotImplementedError

    async def reset(self) -> None:
        """A synchronous reset of the array, in the middle of whatever it does."""
        raise NotImplementedError

    def now(self) -> int:
        """The current clock cycle (for throughput stamps)."""
        return 0


def decode_row(geometry: ArrayGeometry, payload: int) -> tuple[list[int], int]:
    """An `outputs` payload as (active bits of the row, the step's cycle count)."""
    w = geometry.config.cell_shape[1]
    return [(payload >> j) & 1 for j in range(w)], (payload >> (w + 1)) & 0xFFFFFFFF


async def feed(port: StreamPort, geometry: ArrayGeometry, operations: list,
               collected: list[int]) -> None:
    """The send side, like a host's: inputs, commands and state words back to back. Commands,
    resets and loads wait until `collected[0]` shows that everything sent before them has
    come back (an 'interrupt' waits too, so its reset lands in its own step)."""
    issued = 0

    async def settle():
        while collected[0] < issued:
            await port.tick()

    for op in operations:
        if op.kind in ("step", "interrupt"):
            if op.kind == "interrupt":
                await settle()
            x = check_inputs(geometry.config, op.x, batch=False)
            learn_bit = int(op.learn) << geometry.input_width
            for bits in input_beats(geometry, x):
                await port.put("inputs", bits | learn_bit)
            if op.kind == "interrupt":
                for _ in range(op.ticks):
                    await port.tick()
                await port.reset()
                continue
            issued += 1
        elif op.kind == "load":
            await settle()
            await port.put("command", 1)
            for word in geometry.state_to_words(op.state):
                await port.put("state_in", word)
        elif op.kind == "read":
            await settle()
            await port.put("command", 0)
            issued += 1
        elif op.kind == "reset":
            await settle()
            await port.reset()
        else:
            raise ValueError(f"unknown operation {op.kind!r}")


async def collect(port: StreamPort, geometry: ArrayGeometry, operations: list, collected: list[int],
                  check=None) -> Results:
    """The receive side: H rows for each step, the state words for each read. `check(t,
    result)` may return a failure message, which stops the collection (the rest is not
    waited for) and is kept in `Results.failure`."""
    h = geometry.config.cell_shape[0]
    results = Results()
    for op in operations:
        if op.kind == "step":
            rows, cycles = [], 0
            for _ in range(h):
                row, cycles = decode_row(geometry, await port.get("outputs"))
                rows.append(row)
            result = StepResult(np.array(rows, bool), cycles)
            results.cycle_stamps.append(port.now())
            results.steps.append(result)
            collected[0] += 1
            failure = check(len(results.steps) - 1, result) if check else None
            if failure:
                results.failure = failure
                break
        elif op.kind == "read":
            words = [await port.get("state_out") for _ in range(geometry.state_words)]
            results.states.append(geometry.words_to_state(words))
            collected[0] += 1
    return results
