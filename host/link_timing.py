"""The link rates of `cellsp bench links`, timed in simulation: a board's whole gateware (UART,
receive FIFO, protocol engine, array) in Verilator behind the pty harness at the board's clock
and UART bit timing (`cellsp.host.pty_link.board_pty_link`), driven by the host driver as a
board would be, in each reply format: STEPs with their maps, 8 in flight, and BATCH learning
(`Driver.run(outputs=False)`), both learning from the initial state on random inputs and
checked bit for bit against the golden model.

    row = time_link(get_board("ecpix5-85f"), config, 16, steps=200)

The harness counts the clock cycles that pass and the bytes on each pin (`PtyLink.stats`); a
format's inputs a second at the board's clock are steps / (cycles / clock). The harness's
clock runs freely while bits move and for 200,000 cycles after, so a moment in which the host
has nothing in flight still costs model cycles: the timed rate is a lower bound of what the
gateware does, and the bytes a step (which do not depend on the host) are exact.
`line_busy` is the share of those cycles in which the host-to-board line carried a bit.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import numpy as np

from cellsp.boards.boards import Board
from cellsp.sim.config import SPConfig
from cellsp.sim.golden import GoldenModel
from cellsp.sim.wire import maps_check

from .pty_link import board_pty_link
from .targets import open_driver

__all__ = ["time_link", "TIMED_FORMATS"]

#: the reply formats timed, by the names `cellsp.host.bench_boards` gives them
TIMED_FORMATS = ("STEP", "BATCH learning")

#: the density of the random inputs (as `cellsp verify`'s)
INPUT_DENSITY = 0.3


def time_link(board: Board, config: SPConfig, cells_per_pe: int, *, steps: int = 200,
              seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Each format of `TIMED_FORMATS` the board's engine speaks, `steps` learning steps
    through the board gateware in the pty harness: {format: {"steps", "cycles",
    "rx_bytes_per_step", "tx_bytes_per_step", "inputs_per_s", "line_busy"}} with
    "formats_not_offered" and "bit_exact" (every map, or every BATCH's count and check, equal
    to the golden model's). Raises `cellsp.host.verilator_link.LinkError` when the harness
    fails; a build prints its progress on stderr."""
    geometry = board.geometry(config, cells_per_pe)
    link = board_pty_link(geometry, board.clock_hz, board.baud, batching=board.batching)
    rng = np.random.default_rng(seed)
    golden = GoldenModel(config)
    result: dict = {"board": board.name, "cell_shape": list(config.cell_shape),
                    "cells_per_pe": cells_per_pe, "clock_hz": board.clock_hz,
                    "baud": board.baud, "bit_cycles": str(Fraction(board.clock_hz, board.baud)),
                    "formats": {}, "formats_not_offered": [], "bit_exact": True}
    with link as port, open_driver(f"serial:{port}@{board.baud}", geometry,
                                   timeout=10.0, log=log) as driver:
        driver.load_state(golden.state())
        for name in TIMED_FORMATS:
            if name == "BATCH learning" and not driver.batch_steps:
                result["formats_not_offered"].append(name)
                continue
            X = rng.random((steps,) + tuple(config.input_shape)) < INPUT_DENSITY
            want = golden.run(X, learn=True)
            before = link.stats()
            if name == "STEP":
                got, _ = driver.run(X, learn=True, window=8)
                exact = bool((got == want).all())
            else:
                exact = driver.run(X, learn=True, outputs=False) == (steps, maps_check(want))
            after = link.stats()
            delta = {key: after[key] - before[key] for key in after}
            result["bit_exact"] &= exact
            result["formats"][name] = {
                "steps": steps, "cycles": delta["cycles"],
                "rx_bytes_per_step": delta["rx_bytes"] / steps,
                "tx_bytes_per_step": delta["tx_bytes"] / steps,
                "inputs_per_s": round(steps * board.clock_hz / delta["cycles"], 1),
                "line_busy": round(delta["rx_line_cycles"] / delta["cycles"], 3),
                "bit_exact": exact}
            if log:
                f = result["formats"][name]
                log(f"{board.name} {name}: {f['inputs_per_s']:,.0f} inputs/s in model cycles "
                    f"at {board.clock_hz / 1e6:g} MHz, {f['rx_bytes_per_step']:.2f} / "
                    f"{f['tx_bytes_per_step']:.2f} bytes a step, line busy "
                    f"{f['line_busy']:.0%}, bit-exact: {exact}")
    return result
