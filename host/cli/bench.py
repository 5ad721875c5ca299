"""`cellsp bench BENCHMARK`: run one benchmark, print its figures as they come and write them as
JSON (`--out`, or bench-results/BENCHMARK.json). Each benchmark is a subcommand with its own
options; `--out` and `--force` are every benchmark's."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from cellsp.host.files import output_dir, output_file, write_text
from cellsp.sim import bench as golden_bench

from .options import (add_command, add_force, add_seed, add_steps, board_name, positive,
                      positive_float)

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    """Declare `cellsp bench` and a subcommand per benchmark."""
    p = add_command(sub, "bench", None, help="run a benchmark, print its figures and write JSON")
    benchmarks = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    def benchmark(name, run, help):
        b = add_command(benchmarks, name, run, help=help)
        b.add_argument("--out", metavar="FILE",
                       help=f"JSON output, not replaced without --force (default: "
                            f"bench-results/{name}.json, replaced on every run)")
        add_force(b, "the --out file")
        return b

    b = benchmark("golden", _golden, "golden model and software SP speed, one thread")
    b.add_argument("--min-seconds", type=positive_float, default=1.0,
                   help="time each figure over at least this long (default 1)")
    b = benchmark("hdl", _hdl, "cycles per input (Verilator), Verilator speed, Yosys logic "
                               "per cell")
    add_steps(b, 200, "inputs per run (learning, then as many inferring; default 200)")
    b.add_argument("--no-synth", action="store_true", help="skip the Yosys synthesis")
    b = benchmark("transport", _transport, "inputs per second over the compiled Verilator link")
    add_steps(b, 200, "inputs per run (learning, then as many inferring; default 200)")
    b.add_argument("--rounds", type=positive, default=1,
                   help="measure this many times and report the fastest, with every round "
                        "listed (default 1)")
    b.add_argument("--instructions", action="store_true",
                   help="also count the model's instructions per input under callgrind (needs "
                        "valgrind; the same on any machine, unlike inputs/s)")
    b = benchmark("boards", _boards, "the largest array meeting timing on each board")
    b.add_argument("--board", action="append", metavar="NAME", type=board_name,
                   help="sweep only this board (repeatable; default: every board)")
    b = benchmark("fuzz", _fuzz, "faults between the driver and the protocol engine")
    b.add_argument("--frames", type=positive, default=100_000, metavar="N",
                   help="frames over the link per target, faulty and valid (default 100000)")
    b.add_argument("--target", choices=["verilator", "pty", "both"], default="verilator",
                   help="the compiled Verilator engine, the board gateware behind a pty, or "
                        "both (default verilator)")
    add_seed(b, "the faults' and inputs' seed")
    b = benchmark("formal", _formal, "formal proofs of the cell array and the protocol engine "
                                     "(SymbiYosys, Yices)")
    b.add_argument("--level", choices=["quick", "long"], default="long",
                   help="quick: the proofs of `make test`; long: every property on both array "
                        "kinds, larger sizes and depths (default long)")
    b.add_argument("--timeout", type=positive_float, default=900.0, metavar="SECONDS",
                   help="time limit of each proof (default 900)")


def _out(args) -> Path:
    """Where the results go, checked before the benchmark starts."""
    if args.out:
        return output_file(args.out, None, args.force, "--out")
    # the default file is replaced on every run (said in the help)
    return output_dir("bench-results", "the results folder") / f"{args.benchmark}.json"


def _write(data: dict, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if data.get("pass", True) else 1      # fuzz: a wrong output, difference or hang


def _golden(args) -> int:
    out = _out(args)
    print("cellsp bench golden: golden model and software SP, one thread, 32x32 input, "
          "radius 2")
    return _write(golden_bench.bench_golden(min_seconds=args.min_seconds, progress=print), out)


def _hdl(args) -> int:
    # the HDL bench converts gateware (Amaranth): loaded when it runs, not for every command
    from cellsp.host import bench_array

    out = _out(args)
    print("cellsp bench hdl: cycles per input (Verilator), Verilator speed, Yosys logic per "
          "cell (builds each Verilator model once; expect several minutes)")
    return _write(bench_array.bench_hdl(steps=args.steps, synth=not args.no_synth,
                                        progress=print), out)


def _transport(args) -> int:
    # the transport bench imports Amaranth (the array's cycle formula reads a PE constant):
    # loaded when it runs, not for every command
    from cellsp.host import bench_transport

    out = _out(args)
    print("cellsp bench transport: inputs per second over the compiled Verilator link "
          "(builds each model once; expect minutes)")
    return _write(bench_transport.bench_transport(steps=args.steps, rounds=args.rounds,
                                                  instructions=args.instructions,
                                                  progress=print), out)


def _boards(args) -> int:
    # the board builds import Amaranth and its board platforms: loaded when they run
    from cellsp.boards import sweep

    out = _out(args)
    print("cellsp bench boards: the largest array meeting timing on each board (YoWASP "
          "builds, growing until one does not fit or misses timing; expect tens of minutes)")
    names = args.board or None
    with tqdm(total=sweep.build_count(names), unit="build", leave=False,
              dynamic_ncols=True) as bar:
        def built(board: str) -> None:
            bar.set_description(board)
            bar.update(1)

        data = sweep.bench_boards(names, progress=built, log=bar.write)
    print("\n".join(data["table"]))
    return _write(data, out)


def _fuzz(args) -> int:
    # the fuzz bench runs the board gateware behind a pty (Amaranth): loaded when it runs
    from cellsp.host import bench_fuzz

    out = _out(args)
    print(f"cellsp bench fuzz: {args.frames:,} frames of faults between the driver and the "
          f"protocol engine ({args.target}), the device shadowed by the golden model")
    return _write(bench_fuzz.bench_fuzz(frames=args.frames, target=args.target, seed=args.seed,
                                        progress=print, log=print), out)


def _formal(args) -> int:
    # the proofs convert gateware (Amaranth) and run SymbiYosys: loaded when they run
    from cellsp.hdl import formal, properties

    out = _out(args)
    proofs = properties.proof_plan(args.level)
    print(f"cellsp bench formal: {len(proofs)} {args.level} proofs of the cell array and the "
          f"protocol engine (SymbiYosys, smtbmc with Yices; a flawed variant must fail)")
    data = formal.run_proofs(proofs, timeout=args.timeout, progress=print)
    data["level"] = args.level
    return _write(data, out)
