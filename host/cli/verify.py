"""`cellsp verify`: the simulated HDL against the golden model, bit for bit; exits 0 when every
output matches, 1 on a mismatch, 2 on an error. With `--board NAME --netlist`: the board
build's synthesised netlist (`cellsp.host.verify.verify_netlist`)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from cellsp.host import targets
from cellsp.host.files import UsageError
from cellsp.sim import GoldenModel
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.wire import maps_check

from .options import (add_command, add_hardware, add_seed, add_steps, board_of, float_in, hardware,
                      positive)

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    """Declare `cellsp verify`."""
    p = add_command(sub, "verify", run, help="simulated HDL against the golden model, bit for bit",
                    description="Exits 0 when every output matches, 1 on a mismatch, 2 on an "
                                "error.")
    p.add_argument("--sim", choices=["amaranth", "verilator"], default="verilator")
    add_hardware(p, default_cells_per_pe=1, transport_default=None,
                 transport_help="verify through the protocol engine and host driver instead: "
                                "verilator, amaranth (or serial:PORT with a board)")
    add_steps(p, None, "random inputs to run (default 100; 200 with --netlist)")
    p.add_argument("--learn", action="store_true", help="learn on every input")
    add_seed(p, "seed of the random inputs")
    p.add_argument("--input-width", type=positive, help="input bits per beat (default: Win)")
    p.add_argument("--lanes", type=positive, default=4,
                   help="processing elements per memory word (default 4)")
    p.add_argument("--idle", type=float_in(0, 1, hi_open=True), default=0.0,
                   help="probability of idle input cycles (0 to 1, excluded)")
    p.add_argument("--stall", type=float_in(0, 1, hi_open=True), default=0.0,
                   help="probability of output back-pressure (0 to 1, excluded)")
    p.add_argument("--netlist", action="store_true",
                   help="with --board: the netlist Yosys hands to nextpnr for that board's "
                        "build (vendor cell models, Verilator, the pty harness at the board's "
                        "UART timing) instead of the HDL; --learn is implied")
    p.add_argument("--no-outputs", action="store_true",
                   help="with --transport: the run in BATCH requests, the maps left on the "
                        "device; their count and CRC-32 and the final state are compared")
    p.add_argument("--synth-option", action="append", default=None, metavar="OPT",
                   dest="synth_options",
                   help="with --netlist: a synth_ice40/synth_ecp5 option instead of the "
                        "board's (repeatable; e.g. --synth-option=-dff)")


def run(args) -> int:
    """Simulated HDL against the golden model. Always ends with the line
    `verify: N steps, M mismatches` on stdout; exits 1 on a mismatch, 2 on any error (one
    line on stderr)."""
    # the simulators import Amaranth and cocotb: loaded when a verification runs
    from cellsp.host import verify as verification

    report = verification.VerifyReport()
    if args.netlist or args.synth_options:
        return _run_netlist(args, verification)
    if args.no_outputs:
        return _run_without_outputs(args)
    try:
        cfg, p, transport = hardware(args)
        hw = {"lanes": args.lanes, "idle": args.idle, "stall": args.stall, "cells_per_pe": p}
        if transport:
            hw = {"cells_per_pe": p, "transport": transport}
        if args.parallel:
            hw["parallel_count"] = True
        if args.input_width:
            hw["input_width"] = args.input_width
        how = f"{transport} through the protocol" if transport else args.sim
        print(f"cellsp verify: {how}, {cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells "
              f"({p} per processing element{', counted in parallel' if args.parallel else ''}), "
              f"config {cfg.hash}, {args.steps or 100} random inputs, "
              f"learning {'on' if args.learn else 'off'}")
        with tqdm(total=args.steps, unit="step", leave=False, dynamic_ncols=True,
                  disable=None) as bar:
            report = verification.verify(cfg, sim=args.sim, steps=args.steps or 100,
                                         learn=args.learn,
                                         seed=args.seed, progress=bar.update, log=bar.write, **hw)
    except BaseException:   # main() says what failed, in one line on stderr
        print(report.line())
        raise
    for message in report.messages[:20]:
        print(f"  {message}")
    print(report.line())
    return 1 if report.mismatches else 0


def _run_netlist(args, verification) -> int:
    """`cellsp verify --board NAME --netlist`: the board build's netlist against the golden
    model, learning on every input; the figures (synthesis, Verilator build and run seconds)
    on one line before the summary."""
    if not args.netlist:
        raise UsageError("--synth-option needs --netlist; add --netlist (and --board NAME)")
    if not args.board:
        raise UsageError("--netlist simulates a board's netlist; name the board with --board "
                         "NAME (`cellsp boards` lists them)")
    if args.transport or args.parallel or args.input_width or args.idle or args.stall:
        raise UsageError("--netlist takes no --transport, --parallel, --input-width, --idle or "
                         "--stall (the board's build fixes them); drop them")
    board = board_of(args)
    cfg, p, _ = hardware(args)
    steps = args.steps or 200
    options = tuple(args.synth_options) if args.synth_options else board.synth_options
    print(f"cellsp verify: the {board.name} netlist (Yosys synth_{board.device.family}"
          f"{' ' + ' '.join(options) if options else ''}, vendor cell models, Verilator, pty "
          f"harness), {cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells ({p} per processing "
          f"element), config {cfg.hash}, {steps} random inputs, learning on")
    report = verification.VerifyReport()
    try:
        with tqdm(total=steps, unit="step", leave=False, dynamic_ncols=True,
                  disable=None) as bar:
            report, figures = verification.verify_netlist(
                board, cfg, p, steps=steps, learn=True, seed=args.seed, synth_options=options,
                progress=bar.update, log=bar.write)
    except BaseException:   # main() says what failed, in one line on stderr
        print(report.line())
        raise
    for message in report.messages[:20]:
        print(f"  {message}")
    print(f"netlist: synthesis {figures['synthesis_s']} s (when built: "
          f"{figures['synthesis_s_when_built']} s), Verilator build {figures['build_s']} s, "
          f"run {figures['run_s']} s; primitives "
          + ", ".join(f"{name} {count}" for name, count in figures["netlist_cells"].items()))
    print(report.line())
    return 1 if report.mismatches else 0


def _run_without_outputs(args) -> int:
    """`cellsp verify --transport T --no-outputs`: random inputs through the driver in BATCH
    requests (`Driver.run(outputs=False)`); the count of steps and the CRC-32 of their maps
    against the golden model's, then the state read back. Mismatches: 1 for a wrong count or
    check (the maps stay on the device, so which step differs is not known), plus each
    state difference listed (`SPState.differences`: at most 10)."""
    cfg, p, transport = hardware(args)
    if not transport:
        raise UsageError("--no-outputs runs through the protocol engine; add --transport "
                         "verilator, amaranth or serial:PORT")
    steps = args.steps or 100
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=p, parallel_count=args.parallel,
                                        input_width=args.input_width)
    X = np.random.default_rng(args.seed).random((steps,) + tuple(cfg.input_shape)) < 0.3
    golden = GoldenModel(cfg)
    print(f"cellsp verify: {transport} through the protocol, the maps left on the device "
          f"(BATCH), {cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells ({p} per processing "
          f"element), config {cfg.hash}, {steps} random inputs, learning "
          f"{'on' if args.learn else 'off'}")
    done = mismatches = 0
    try:
        with targets.open_driver(transport, geometry, log=print) as driver:
            driver.load_state(golden.state())
            with tqdm(total=steps, unit="step", leave=False, dynamic_ncols=True,
                      disable=None) as bar:
                done, check = driver.run(X, learn=args.learn, outputs=False,
                                         progress=bar.update)
            state = driver.read_state()
    except BaseException:   # main() says what failed, in one line on stderr
        print(f"verify: {done} steps, {mismatches} mismatches")
        raise
    want = maps_check(golden.run(X, learn=args.learn))
    if (done, check) != (steps, want):
        mismatches += 1
        print(f"  {done} steps with maps check 0x{check:08x}; the golden model: {steps} steps, "
              f"0x{want:08x}")
    differences = state.differences(golden.state())
    mismatches += len(differences)
    for message in differences[:20]:
        print(f"  state: {message}")
    print(f"verify: {done} steps, {mismatches} mismatches")
    return 1 if mismatches else 0
