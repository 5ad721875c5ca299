"""The `cellsp` command line.

Every failure a user can cause or meet ends with one line on stderr, `cellsp CMD: error: WHAT
FAILED; WHAT TO DO`, and exit status 2 (`verify`: 1 for a mismatch; Ctrl-C: 130, SIGTERM:
143), with no traceback unless `--debug`. Paths and options are checked before any work
starts; outputs are written atomically and a file named on the command line is not replaced
without `--force`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .files import UsageError, output_dir, output_file

__all__ = ["main", "build_parser", "CommandFailed"]

#: `cellsp run` streams its inputs to the driver in blocks of this many, keeping each block's
#: outputs as it completes (what a failure part-way still writes)
RUN_BLOCK = 512


class CommandFailed(Exception):
    """A command stopped part-way; the message says what failed and what it kept; `code` is
    the exit status (2, or 128 + the signal for an interrupt)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class _ArgumentError(Exception):
    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `cellsp CMD: error: ...` (raised to
    `main`, which prints it and exits 2)."""

    def error(self, message):
        raise _ArgumentError(self.prog, message)


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {lo}, got {value}")
        return value
    return parse


_positive = _int_at_least(1)


def _float_in(lo: float, hi: float, hi_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (lo <= value < hi if hi_open else lo <= value <= hi):
            raise argparse.ArgumentTypeError(
                f"expected a number from {lo:g} to {hi:g}{' (excluded)' if hi_open else ''}, "
                f"got {text}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _board_name(text: str) -> str:
    from cellsp.boards.boards import get_board

    try:
        return get_board(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _transport(text: str) -> str:
    if text in ("verilator", "amaranth"):
        return text
    if text.startswith("serial:"):
        from .serial_link import parse_serial_target

        try:
            parse_serial_target(text, 3_000_000)   # only checked here; the example's baud
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    raise argparse.ArgumentTypeError(f"unknown transport {text!r}: use verilator, amaranth or "
                                     f"serial:PORT[@BAUD]")


def _load_config(path: str | None):
    from cellsp.sim import SPConfig

    return SPConfig() if path is None else SPConfig.from_json(path)


def _hardware(args, default_cells_per_pe: int):
    """(config, cells per PE, transport) from --config, --board, --cells-per-pe and
    --transport: a board stands for the config and cells per PE `cellsp build --board` uses by
    default, and for its UART's baud rate on a serial port given without one."""
    board = None
    if getattr(args, "board", None):
        from cellsp.boards.boards import get_board

        board = get_board(args.board)
    if args.config:
        cfg = _load_config(args.config)
    else:
        cfg = board.default_config if board else _load_config(None)
    p = args.cells_per_pe
    if p is None:
        if board:
            from cellsp.boards.commands import default_cells_per_pe

            p = (board.default_cells_per_pe if not args.config
                 else default_cells_per_pe(board, cfg))
        else:
            p = default_cells_per_pe
    transport = getattr(args, "transport", None)
    if board and transport and transport.startswith("serial:") and "@" not in transport:
        transport = f"{transport}@{board.baud}"
    return cfg, p, transport


def cmd_config(args) -> int:
    """Print a config (the default, or a file's, validated) with its derived values."""
    cfg = _load_config(args.config)
    print(cfg.to_json(), end="")
    if args.derived:
        derived = {
            "config_hash": cfg.hash, "window_size": cfg.window_size,
            "potential_synapses_min": cfg.potential_counts_min, "overlap_bits": cfg.overlap_bits,
            "boosted_bits": cfg.boosted_bits, "duty_reg_bits": cfg.duty_reg_bits,
            "boost_table": list(cfg.boost_table),
        }
        for key, value in derived.items():
            print(f"# {key}: {value}")
    return 0


def cmd_bench(args) -> int:
    from cellsp.sim.bench import bench_golden

    from .files import write_text

    if args.out:
        out = output_file(args.out, None, args.force, "--out")
    else:   # the default file is replaced on every run (said in the help)
        out = output_dir("bench-results", "the results folder") / f"{args.what}.json"
    if args.what == "golden":
        print("cellsp bench golden: golden model and software SP, one thread, 32x32 input, "
              "radius 2")
        data = bench_golden(min_seconds=args.min_seconds)
    elif args.what == "boards":
        from cellsp.boards.sweep import bench_boards

        print("cellsp bench boards: the largest array meeting timing on each board (YoWASP "
              "builds, growing until one does not fit or misses timing; expect tens of minutes)")
        data = bench_boards(args.board or None)
        print("\n".join(data["table"]))
    elif args.what == "transport":
        from .bench_transport import bench_transport

        print("cellsp bench transport: inputs per second over the compiled Verilator link "
              "(builds each model once; expect minutes)")
        data = bench_transport(steps=args.steps, rounds=args.rounds,
                               instructions=args.instructions)
    elif args.what == "fuzz":
        from .bench_fuzz import bench_fuzz

        print(f"cellsp bench fuzz: {args.frames:,} frames of faults between the driver and the "
              f"protocol engine ({args.target}), the device shadowed by the golden model")
        data = bench_fuzz(frames=args.frames, target=args.target, seed=args.seed,
                          progress=print, log=print)
    else:
        from cellsp.host.bench_array import bench_hdl

        print("cellsp bench hdl: cycles per input (Verilator), Verilator speed, Yosys logic per "
              "cell (builds each Verilator model once; expect several minutes)")
        data = bench_hdl(steps=args.steps, synth=not args.no_synth)
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if data.get("pass", True) else 1      # fuzz: a wrong output, difference or hang


def cmd_build(args) -> int:
    """Build a board's bitstream and report; program it with --program."""
    from cellsp.boards.boards import get_board
    from cellsp.boards.commands import build_command

    config = args.config and _load_config(args.config)
    out = output_dir(args.out or Path("build") / get_board(args.board).name, "--out")
    return build_command(board=args.board, config=config, cells_per_pe=args.cells_per_pe,
                         out=str(out), program=args.program, fit_check=not args.no_fit_check,
                         config_file=args.config)


def cmd_boards(args) -> int:
    """List the boards and their device limits."""
    from cellsp.boards.commands import boards_table

    print(boards_table())
    return 0


def cmd_compare(args) -> int:
    from .demo import run_demo

    cfg, p, transport = _hardware(args, 16)
    return run_demo(config=cfg, out_dir=Path(args.out), passes=args.passes, target=transport,
                    cells_per_pe=p, limit=args.limit, parallel_count=args.parallel)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(config=_load_config(args.config), out_dir=Path(args.out),
                    passes=args.passes, target=args.target, cells_per_pe=args.cells_per_pe,
                    limit=args.limit, parallel_count=args.parallel)


def _load_inputs(path: str, cfg):
    """The inputs of `cellsp run`, checked against `cfg`: (T, Hin, Win) bool, T >= 1."""
    import pickle

    import numpy as np

    from cellsp.sim.inputs import check_binary

    from .files import input_file

    what = f"INPUTS {path!r}"
    input_file(path, "INPUTS", "give an .npy file of (T, Hin, Win) 0/1 inputs (numpy.save)")
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise UsageError(f"cannot read {what} as an .npy array ({' '.join(str(exc).split())}); "
                         f"write the inputs with numpy.save") from None
    if isinstance(X, np.lib.npyio.NpzFile):
        names = list(X.files)
        X.close()
        raise UsageError(f"{what} is an .npz archive (arrays {names}), not an .npy array; save "
                         f"the inputs alone with numpy.save('inputs.npy', X)")
    if X.ndim == 0:
        raise UsageError(f"{what} holds a single value (a 0-d array); give a (T, "
                         f"{cfg.input_shape[0]}, {cfg.input_shape[1]}) array of inputs")
    if X.ndim == 2:
        X = X[None]
    try:
        X = check_binary(X, cfg.input_shape, batch=True, what="the config's input_shape")
    except ValueError as exc:
        hint = ("give inputs of that shape, or the config they were made for (--config FILE)"
                if X.shape[1:] != tuple(cfg.input_shape) or X.ndim != 3
                else "make the inputs 0/1 (bool) first")
        raise UsageError(f"{what}: {exc}; {hint}") from None
    if len(X) == 0:
        raise UsageError(f"{what} holds no inputs (shape {X.shape}); give at least one")
    return X


def _load_state(path: str, cfg):
    """The `--state` file's state, checked against `cfg` (the config it was saved with)."""
    from cellsp.sim import GoldenModel

    from .files import input_file

    input_file(path, "--state", "give a state file written by `cellsp run --save-state`")
    try:
        model = GoldenModel.load(path)
    except ValueError as exc:
        raise UsageError(f"{exc}; give a state file written by `cellsp run --save-state`") \
            from None
    if model.config != cfg:
        def shown(c):
            return (f"config {c.hash[:12]}, {c.cell_shape[0]}x{c.cell_shape[1]} cells, "
                    f"{c.input_shape[0]}x{c.input_shape[1]} inputs")
        raise UsageError(f"--state {path!r} was saved with another config ({shown(model.config)}) "
                         f"than this run's ({shown(cfg)}); pass the config it was saved with "
                         f"(--config FILE), or a state saved with this one")
    return model.state()


def cmd_run(args) -> int:
    """Stream an .npy of inputs through the hardware SP and save its outputs. Everything is
    checked before the model is built or the device opened; a run that fails or is
    interrupted part-way writes the outputs computed so far and says how many."""
    import numpy as np
    from tqdm import tqdm

    from cellsp.sim.geometry import ArrayGeometry
    from cellsp.sim import GoldenModel

    from .files import atomic_path, save_npy
    from .targets import open_driver

    cfg, p, transport = _hardware(args, 16)
    output = output_file(args.output, ".npy", args.force, "OUTPUTS")
    save_state = args.save_state and output_file(args.save_state, ".npz", args.force,
                                                 "--save-state")
    X = _load_inputs(args.inputs, cfg)
    start = _load_state(args.state, cfg) if args.state else GoldenModel(cfg).state()
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=p, parallel_count=args.parallel)
    T = len(X)
    outs, cycles = [], []
    started = False
    try:
        with open_driver(transport, geometry, log=print) as driver:
            driver.load_state(start)
            started = True
            with tqdm(total=T, unit="input", leave=False, dynamic_ncols=True,
                      disable=None) as bar:
                for first in range(0, T, RUN_BLOCK):
                    out, cyc = driver.run(X[first:first + RUN_BLOCK], learn=args.learn, window=8,
                                          progress=bar.update)
                    outs.append(out)
                    cycles.append(cyc)
            if save_state:
                model = GoldenModel(cfg)
                model.set_state(driver.read_state())
                with atomic_path(save_state) as tmp:
                    model.save(tmp)
    except (Exception, KeyboardInterrupt) as exc:
        if not started:
            raise
        for error in (exc, exc.__context__):     # closing the link may raise in turn
            partial = getattr(error, "partial", None)
            if partial is not None:
                outs.append(np.asarray(partial[0], bool))
                cycles.append(np.asarray(partial[1]))
                break
        done = sum(len(o) for o in outs)
        kept = "no output was complete, nothing written"
        if done:
            save_npy(output, np.concatenate(outs))
            kept = (f"wrote {'those' if done < T else 'all'} {done:,} outputs to {output}"
                    + ("; the state was not saved" if save_state else ""))
        if isinstance(exc, KeyboardInterrupt):
            raise CommandFailed(f"{_interrupted(exc)} after {done:,} of {T:,} inputs; {kept}",
                                code=_interrupt_code(exc)) from exc
        raise CommandFailed(f"{_describe(exc)}; stopped after {done:,} of {T:,} inputs: "
                            f"{kept}") from exc
    out, cycles = np.concatenate(outs), np.concatenate(cycles)
    save_npy(output, out)
    print(f"cellsp run: {T:,} inputs, {out.mean():.1%} cells active on average, "
          f"{cycles.mean():.0f} cycles of latency per input (with 8 in flight, it includes the "
          f"wait behind the step before); wrote {output}"
          + (f" and {save_state}" if save_state else ""))
    return 0


def cmd_verify(args) -> int:
    """Simulated HDL against the golden model. Always ends with the line
    `verify: N steps, M mismatches` on stdout; exits 1 on a mismatch, 2 on any error (one
    line on stderr)."""
    from tqdm import tqdm

    from cellsp.host.verify import VerifyReport, verify

    report = VerifyReport()
    try:
        cfg, p, transport = _hardware(args, 1)
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
              f"config {cfg.hash}, {args.steps} random inputs, "
              f"learning {'on' if args.learn else 'off'}")
        with tqdm(total=args.steps, unit="step", leave=False, dynamic_ncols=True,
                  disable=None) as bar:
            report = verify(cfg, sim=args.sim, steps=args.steps, learn=args.learn,
                            seed=args.seed, progress=bar.update,
                            log=lambda msg: bar.write(msg), **hw)
    except BaseException:   # main() says what failed, in one line on stderr
        print(report.line())
        raise
    for message in report.messages[:20]:
        print(f"  {message}")
    print(report.line())
    return 1 if report.mismatches else 0


def _config_option(p, default: str = "SPConfig()") -> None:
    p.add_argument("--config", metavar="FILE", help=f"SPConfig JSON (default: {default})")


def _hardware_options(p) -> None:
    """--config, --transport, --cells-per-pe and --board of the commands that drive the
    hardware SP through a transport (read back by `_hardware`)."""
    _config_option(p)
    p.add_argument("--transport", default="verilator", metavar="T", type=_transport,
                   help="verilator (default), amaranth, or serial:PORT[@BAUD]")
    p.add_argument("--cells-per-pe", type=_positive, metavar="P",
                   help="cells per processing element (default 16, or the board's)")
    p.add_argument("--board", metavar="NAME", type=_board_name,
                   help="a board of `cellsp boards`: its default config and cells per PE (as "
                        "`cellsp build --board` makes them) and its UART's baud rate")
    _parallel_option(p)


def _parallel_option(p) -> None:
    p.add_argument("--parallel", action="store_true",
                   help="the count-parallel array: every cell of a PE counted at once (the same "
                        "results in about half the simulator's instructions; not for boards)")


def _force_option(p, what: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"replace {what} if it exists (default: refuse, before any work)")


def _debug_option(p, default) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, show the Python traceback instead of the one-line message")


_LIMIT_HELP = ("use only the first N digits (at least 10: the readout trains on two thirds and "
               "tests on the rest)")
_REPORT_HELP = ("report folder (default: ./cellsp-report); created if missing, its report "
                "files are replaced")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cellsp",
        description="Cellular HTM spatial pooler: golden model, HDL, host driver, FPGA builds.",
        epilog="Errors end with one line on stderr, `cellsp COMMAND: error: ...`, and exit "
               "status 2 (verify: 1 for a mismatch; Ctrl-C 130, SIGTERM 143); --debug shows the "
               "traceback. Paths and options are checked before any work starts; output files "
               "are written whole or not at all, and a file you name is not replaced without "
               "--force (report and build folders and bench-results/WHAT.json are, as each "
               "command's help says).")
    _debug_option(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, **kwargs):
        p = sub.add_parser(name, **kwargs)
        _debug_option(p, argparse.SUPPRESS)
        return p

    p = command("demo", help="the main job: run the SP on the digits data and report")
    _config_option(p)
    p.add_argument("--out", default="cellsp-report", metavar="DIR", help=_REPORT_HELP)
    p.add_argument("--passes", type=_positive, default=3,
                   help="learning passes over the training digits (default 3)")
    p.add_argument("--target", choices=["verilator", "amaranth"], default="verilator",
                   help="where the hardware SP runs (default: the compiled Verilator model)")
    p.add_argument("--cells-per-pe", type=_positive, default=16, metavar="P",
                   help="cells per processing element (default 16)")
    p.add_argument("--limit", type=_int_at_least(10), metavar="N", help=_LIMIT_HELP)
    _parallel_option(p)
    p.set_defaults(func=cmd_demo)

    p = command("bench", help="run a benchmark, print its figures and write JSON")
    p.add_argument("what", choices=["golden", "hdl", "transport", "boards", "fuzz"],
                   help="which benchmark")
    p.add_argument("--frames", type=_positive, default=100_000, metavar="N",
                   help="fuzz: frames over the link per target, faulty and valid (default 100000)")
    p.add_argument("--target", choices=["verilator", "pty", "both"], default="verilator",
                   help="fuzz: the compiled Verilator engine, the board gateware behind a pty, "
                        "or both (default verilator)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="fuzz: the faults' and inputs' seed")
    p.add_argument("--out", metavar="FILE",
                   help="JSON output, not replaced without --force (default: "
                        "bench-results/WHAT.json, replaced on every run)")
    _force_option(p, "the --out file")
    p.add_argument("--min-seconds", type=_positive_float, default=1.0,
                   help="golden: time each figure over at least this long (default 1)")
    p.add_argument("--steps", type=_positive, default=200,
                   help="hdl, transport: inputs per run (learning, then as many inferring)")
    p.add_argument("--rounds", type=_positive, default=1,
                   help="transport: measure this many times and report the fastest, with every "
                        "round listed (default 1)")
    p.add_argument("--instructions", action="store_true",
                   help="transport: also count the model's instructions per input under "
                        "callgrind (needs valgrind; the same on any machine, unlike inputs/s)")
    p.add_argument("--no-synth", action="store_true", help="hdl: skip the Yosys synthesis")
    p.add_argument("--board", action="append", metavar="NAME", type=_board_name,
                   help="boards: sweep only this board (repeatable; default: every board)")
    p.set_defaults(func=cmd_bench)

    p = command("build", help="build a bitstream for an FPGA board (YoWASP tools only)")
    p.add_argument("--board", required=True, metavar="NAME", type=_board_name,
                   help="a board of `cellsp boards`")
    _config_option(p, "the board's default array")
    p.add_argument("--cells-per-pe", type=_positive, metavar="P",
                   help="cells per processing element (default: the board's, or the largest "
                        "divisor of the cell columns not above it)")
    p.add_argument("--out", metavar="DIR",
                   help="build folder (default: build/BOARD); created if missing, the files "
                        "of an earlier build in it are replaced")
    p.add_argument("--program", action="store_true",
                   help="program the board after a build that meets timing")
    p.add_argument("--no-fit-check", action="store_true",
                   help="build even when the estimate says the config cannot fit")
    p.set_defaults(func=cmd_build)

    p = command("boards", help="list the FPGA boards and what their devices hold")
    p.set_defaults(func=cmd_boards)

    p = command("verify", help="simulated HDL against the golden model, bit for bit",
                description="Exits 0 when every output matches, 1 on a mismatch, 2 on an error.")
    p.add_argument("--sim", choices=["amaranth", "verilator"], default="verilator")
    _config_option(p)
    p.add_argument("--steps", type=_positive, default=100,
                   help="random inputs to run (default 100)")
    p.add_argument("--learn", action="store_true", help="learn on every input")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the random inputs")
    p.add_argument("--input-width", type=_positive, help="input bits per beat (default: Win)")
    p.add_argument("--lanes", type=_positive, default=4,
                   help="processing elements per memory word (default 4)")
    p.add_argument("--cells-per-pe", type=_positive, metavar="P",
                   help="cells served by one processing element; must divide the cell columns "
                        "(default 1, or the board's)")
    p.add_argument("--idle", type=_float_in(0, 1, hi_open=True), default=0.0,
                   help="probability of idle input cycles (0 to 1, excluded)")
    p.add_argument("--stall", type=_float_in(0, 1, hi_open=True), default=0.0,
                   help="probability of output back-pressure (0 to 1, excluded)")
    p.add_argument("--transport", metavar="T", type=_transport,
                   help="verify through the protocol engine and host driver instead: "
                        "verilator, amaranth (or serial:PORT with a board)")
    p.add_argument("--board", metavar="NAME", type=_board_name,
                   help="a board of `cellsp boards`: its default config and cells per PE (as "
                        "`cellsp build --board` makes them) and its UART's baud rate")
    _parallel_option(p)
    p.set_defaults(func=cmd_verify)

    p = command("run", help="stream an .npy of inputs through the hardware SP",
                description="Inputs, state and paths are checked before the model is built. A "
                            "run that fails or is interrupted part-way writes the outputs "
                            "computed so far to OUTPUTS and says how many.")
    p.add_argument("inputs", metavar="INPUTS.npy", help="(T, Hin, Win) bool or 0/1 array")
    p.add_argument("output", metavar="OUTPUTS.npy",
                   help="where to save (T, H, W) active cells (.npy appended when missing)")
    _hardware_options(p)
    p.add_argument("--learn", action="store_true", help="learn on every input")
    p.add_argument("--state", metavar="FILE.npz", help="start from a saved golden-model state")
    p.add_argument("--save-state", metavar="FILE.npz",
                   help="save the final state (.npz appended when missing)")
    _force_option(p, "OUTPUTS and the --save-state file")
    p.set_defaults(func=cmd_run)

    p = command("compare", help="the demo's comparison on a given config (and data)")
    _hardware_options(p)
    p.add_argument("--passes", type=_positive, default=3,
                   help="learning passes over the training data (default 3)")
    p.add_argument("--limit", type=_int_at_least(10), metavar="N", help=_LIMIT_HELP)
    p.add_argument("--out", default="cellsp-report", metavar="DIR", help=_REPORT_HELP)
    p.set_defaults(func=cmd_compare)

    p = command("config", help="print the default config, or validate a config file")
    p.add_argument("config", nargs="?", metavar="FILE", help="SPConfig JSON to validate and show")
    p.add_argument("--derived", action="store_true", help="also print derived values")
    p.set_defaults(func=cmd_config)
    parser.commands = sub.choices
    return parser


def _interrupted(exc: KeyboardInterrupt) -> str:
    """'interrupted' for Ctrl-C, 'terminated by SIGTERM' (or SIGHUP) for the signals that
    `cellsp.sim.processes` turns into a KeyboardInterrupt carrying `signum`."""
    return str(exc) if getattr(exc, "signum", None) else "interrupted"


def _interrupt_code(exc: KeyboardInterrupt) -> int:
    """The shell's status for death by that signal: 128 + its number (130 for SIGINT)."""
    return 128 + (getattr(exc, "signum", None) or 2)


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 30] + " ... (--debug shows all)"


def _describe(exc: BaseException) -> str:
    """What failed and what to do, for any exception a command may end with."""
    try:
        from .driver import ConfigMismatch, DeviceError, DeviceTimeout
        from .serial_link import SerialPortError
        from .verilator_link import LinkError
    except Exception:  # noqa: BLE001 - a broken module: say so rather than fail in turn
        ConfigMismatch = DeviceError = DeviceTimeout = SerialPortError = LinkError = ()

    message = _one_line(exc)
    hints = [
        (ConfigMismatch, ""),
        (DeviceTimeout, "is the device running, programmed and on this port? Reset it and run "
                        "again"),
        (DeviceError, "reset the device (or run again to restart the model) and run again"),
        (LinkError, "run again; if it fails again, run with --debug and report the output"),
        (SerialPortError, "check the cable and the port (`python -m serial.tools.list_ports`) "
                          "and run again"),
        ((UsageError, CommandFailed, ValueError), ""),
    ]
    if isinstance(exc, OSError) and not (SerialPortError and isinstance(exc, SerialPortError)):
        what = exc.strerror or message
        if exc.filename:
            return _one_line(f"{exc.filename}: {what}; check the path, its folder and its "
                             f"permissions")
        return _one_line(f"{what}; check the device, the disk and the paths given")
    for kind, hint in hints:
        if isinstance(exc, kind):
            return message if not hint or "; " in message else f"{message}; {hint}"
    try:
        from cellsp.boards.build import BuildError
        from cellsp.host.array_verilator import VerilatorError
    except Exception:  # noqa: BLE001 - as above
        BuildError = VerilatorError = ()
    if isinstance(exc, (BuildError, VerilatorError)):
        return message if "; " in message else f"{message}; see the log it names"
    return _one_line(f"internal error: {type(exc).__name__}: {exc}; please report it with the "
                     f"output of the same command with --debug")


def main(argv: list[str] | None = None) -> int:
    if argv is None:   # the program (not a test calling main): SIGTERM, SIGHUP unwind like ^C
        from cellsp.sim.processes import install_signal_handlers

        install_signal_handlers()
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            which = parser.commands.get(getattr(args, "command", None), parser)
            which.error(f"unrecognized arguments: {' '.join(extra)}")
    except _ArgumentError as exc:
        print(f"{exc.prog}: error: {_one_line(exc.message)}; see `{exc.prog} --help`",
              file=sys.stderr)
        return 2
    except SystemExit as exc:   # --help
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:  # noqa: BLE001 - an option's check failed in itself
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"cellsp: error: {_describe(exc)}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        print(f"cellsp: error: name a command ({', '.join(parser.commands)}); see "
              f"`cellsp --help`", file=sys.stderr)
        return 2
    name = f"cellsp {args.command}"
    try:
        return args.func(args)
    except CommandFailed as exc:
        if args.debug:
            raise
        print(f"{name}: {'error: ' if exc.code == 2 else ''}{_one_line(exc)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        print(f"{name}: {_interrupted(exc)}; nothing was written", file=sys.stderr)
        return _interrupt_code(exc)
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line (--debug: all)
        if args.debug:
            raise
        print(f"{name}: error: {_describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
