"""The `cellsp` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .serial_link import SerialPortError

__all__ = ["main"]


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
    from cellsp.sim.bench import bench_golden, write_json

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
    else:
        from cellsp.sim.bench_hdl import bench_hdl

        print("cellsp bench hdl: cycles per input (Verilator), Verilator speed, Yosys logic per "
              "cell (builds each Verilator model once; expect several minutes)")
        data = bench_hdl(steps=args.steps, synth=not args.no_synth)
    out = write_json(data, args.out or Path("bench-results") / f"{args.what}.json")
    print(f"wrote {out}")
    return 0


def cmd_build(args) -> int:
    """Build a board's bitstream and report; program it with --program."""
    from cellsp.boards.commands import build_command

    return build_command(board=args.board, config=args.config and _load_config(args.config),
                         cells_per_pe=args.cells_per_pe, out=args.out, program=args.program,
                         fit_check=not args.no_fit_check, config_file=args.config)


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


def cmd_run(args) -> int:
    """Stream an .npy of inputs through the hardware SP and save its outputs."""
    import numpy as np
    from tqdm import tqdm

    from cellsp.hdl.geometry import ArrayGeometry
    from cellsp.sim import GoldenModel

    from .targets import open_driver

    cfg, p, transport = _hardware(args, 16)
    X = np.load(args.inputs)
    if X.ndim == 2:
        X = X[None]
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=p, parallel_count=args.parallel)
    with open_driver(transport, geometry, log=print) as driver:
        driver.load_state(GoldenModel.load(args.state).state() if args.state
                          else GoldenModel(cfg).state())
        with tqdm(total=len(X), unit="input", leave=False, dynamic_ncols=True) as bar:
            out, cycles = driver.run(X, learn=args.learn, window=8, progress=bar.update)
        if args.save_state:
            model = GoldenModel(cfg)
            model.set_state(driver.read_state())
            model.save(args.save_state)
    np.save(args.output, out)
    print(f"cellsp run: {len(X)} inputs, {out.mean():.1%} cells active on average, "
          f"{cycles.mean():.0f} cycles of latency per input (with 8 in flight, it includes the "
          f"wait behind the step before); wrote {args.output}"
          + (f" and {args.save_state}" if args.save_state else ""))
    return 0


def cmd_verify(args) -> int:
    """Simulated HDL against the golden model. Always ends with the line
    `verify: N steps, M mismatches`; exits 1 on any mismatch or error."""
    from tqdm import tqdm

    from cellsp.sim.verify import VerifyReport, verify

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
        with tqdm(total=args.steps, unit="step", leave=False, dynamic_ncols=True) as bar:
            report = verify(cfg, sim=args.sim, steps=args.steps, learn=args.learn,
                            seed=args.seed, progress=bar.update,
                            log=lambda msg: bar.write(msg), **hw)
    except Exception as exc:  # any failure to configure, build or run fails the verification
        print(f"cellsp verify: error: {exc}", file=sys.stderr)
        print(report.line())
        return 1
    for message in report.messages[:20]:
        print(f"  {message}")
    print(report.line())
    return 1 if report.mismatches else 0


def _hardware_options(p) -> None:
    """--config, --transport, --cells-per-pe and --board of the commands that drive the
    hardware SP through a transport (read back by `_hardware`)."""
    p.add_argument("--config", metavar="FILE", help="SPConfig JSON (default: SPConfig())")
    p.add_argument("--transport", default="verilator", metavar="T",
                   help="verilator (default), amaranth, or serial:PORT[@BAUD]")
    p.add_argument("--cells-per-pe", type=int, metavar="P",
                   help="cells per processing element (default 16, or the board's)")
    p.add_argument("--board", metavar="NAME",
                   help="a board of `cellsp boards`: its default config and cells per PE (as "
                        "`cellsp build --board` makes them) and its UART's baud rate")
    _parallel_option(p)


def _parallel_option(p) -> None:
    p.add_argument("--parallel", action="store_true",
                   help="the count-parallel array: every cell of a PE counted at once (the same "
                        "results in about half the simulator's instructions; not for boards)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsp",
        description="Cellular HTM spatial pooler: golden model, HDL, host driver, FPGA builds.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job: run the SP on the digits data and report")
    p.add_argument("--config", metavar="FILE", help="SPConfig JSON (default: SPConfig())")
    p.add_argument("--out", default="cellsp-report", metavar="DIR",
                   help="report folder (default: ./cellsp-report)")
    p.add_argument("--passes", type=int, default=3,
                   help="learning passes over the training digits (default 3)")
    p.add_argument("--target", choices=["verilator", "amaranth"], default="verilator",
                   help="where the hardware SP runs (default: the compiled Verilator model)")
    p.add_argument("--cells-per-pe", type=int, default=16, metavar="P",
                   help="cells per processing element (default 16)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N digits")
    _parallel_option(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="run a benchmark, print its figures and write JSON")
    p.add_argument("what", choices=["golden", "hdl", "transport", "boards"],
                   help="which benchmark")
    p.add_argument("--out", metavar="FILE", help="JSON output (default: bench-results/WHAT.json)")
    p.add_argument("--min-seconds", type=float, default=1.0,
                   help="golden: time each figure over at least this long (default 1)")
    p.add_argument("--steps", type=int, default=200,
                   help="hdl, transport: inputs per run (learning, then as many inferring)")
    p.add_argument("--rounds", type=int, default=1,
                   help="transport: measure this many times and report the fastest, with every "
                        "round listed (default 1)")
    p.add_argument("--instructions", action="store_true",
                   help="transport: also count the model's instructions per input under "
                        "callgrind (needs valgrind; the same on any machine, unlike inputs/s)")
    p.add_argument("--no-synth", action="store_true", help="hdl: skip the Yosys synthesis")
    p.add_argument("--board", action="append", metavar="NAME",
                   help="boards: sweep only this board (repeatable; default: every board)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("build", help="build a bitstream for an FPGA board (YoWASP tools only)")
    p.add_argument("--board", required=True, metavar="NAME", help="a board of `cellsp boards`")
    p.add_argument("--config", metavar="FILE",
                   help="SPConfig JSON (default: the board's default array)")
    p.add_argument("--cells-per-pe", type=int, metavar="P",
                   help="cells per processing element (default: the board's, or the largest "
                        "divisor of the cell columns not above it)")
    p.add_argument("--out", metavar="DIR", help="build folder (default: build/BOARD)")
    p.add_argument("--program", action="store_true",
                   help="program the board after a build that meets timing")
    p.add_argument("--no-fit-check", action="store_true",
                   help="build even when the estimate says the config cannot fit")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("boards", help="list the FPGA boards and what their devices hold")
    p.set_defaults(func=cmd_boards)

    p = sub.add_parser("verify", help="simulated HDL against the golden model, bit for bit")
    p.add_argument("--sim", choices=["amaranth", "verilator"], default="verilator")
    p.add_argument("--config", metavar="FILE", help="SPConfig JSON (default: SPConfig())")
    p.add_argument("--steps", type=int, default=100, help="random inputs to run (default 100)")
    p.add_argument("--learn", action="store_true", help="learn on every input")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--input-width", type=int, help="input bits per beat (default: Win)")
    p.add_argument("--lanes", type=int, default=4,
                   help="processing elements per memory word (default 4)")
    p.add_argument("--cells-per-pe", type=int, metavar="P",
                   help="cells served by one processing element; must divide the cell columns "
                        "(default 1, or the board's)")
    p.add_argument("--idle", type=float, default=0.0, help="probability of idle input cycles")
    p.add_argument("--stall", type=float, default=0.0, help="probability of output back-pressure")
    p.add_argument("--transport", metavar="T",
                   help="verify through the protocol engine and host driver instead: "
                        "verilator, amaranth (or serial:PORT with a board)")
    p.add_argument("--board", metavar="NAME",
                   help="a board of `cellsp boards`: its default config and cells per PE (as "
                        "`cellsp build --board` makes them) and its UART's baud rate")
    _parallel_option(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("run", help="stream an .npy of inputs through the hardware SP")
    p.add_argument("inputs", metavar="INPUTS.npy", help="(T, Hin, Win) bool or 0/1 array")
    p.add_argument("output", metavar="OUTPUTS.npy", help="where to save (T, H, W) active cells")
    _hardware_options(p)
    p.add_argument("--learn", action="store_true", help="learn on every input")
    p.add_argument("--state", metavar="FILE.npz", help="start from a saved golden-model state")
    p.add_argument("--save-state", metavar="FILE.npz", help="save the final state")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="the demo's comparison on a given config (and data)")
    _hardware_options(p)
    p.add_argument("--passes", type=int, default=3, help="learning passes over the training data")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N digits")
    p.add_argument("--out", default="cellsp-report", metavar="DIR")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("config", help="print the default config, or validate a config file")
    p.add_argument("config", nargs="?", metavar="FILE", help="SPConfig JSON to validate and show")
    p.add_argument("--derived", action="store_true", help="also print derived values")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, SerialPortError) as exc:  # bad configs, inputs and ports: a clear
        print(f"cellsp {args.command}: error: {exc}", file=sys.stderr)   # message, no traceback
        return 2
    except KeyboardInterrupt:
        print(f"cellsp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
