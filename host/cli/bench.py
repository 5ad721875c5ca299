"""`cellsp bench BENCHMARK`: run one benchmark, print its figures as they come and write them as
JSON (`--out`, or bench-results/BENCHMARK.json). Each benchmark is a subcommand with its own
options; `--out` and `--force` are every benchmark's."""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from cellsp.boards.boards import BOARDS, get_board
from cellsp.host import mutations
from cellsp.host.files import UsageError, input_file, output_dir, output_file, write_text
from cellsp.sim import bench as golden_bench
from cellsp.sim import jobs
from cellsp.sim.config import SPConfig

from .errors import CommandFailed, stopped_part_way
from .options import (add_command, add_config, add_force, add_seed, add_steps, board_name,
                      int_at_least, load_config, positive, positive_float)

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
    _add_sweep_options(b, "builds")
    b = benchmark("fuzz", _fuzz, "faults between the driver and the protocol engine")
    b.add_argument("--frames", type=positive, default=100_000, metavar="N",
                   help="frames over the link per target, faulty and valid (default 100000)")
    b.add_argument("--target", choices=["verilator", "pty", "both"], default="verilator",
                   help="the compiled Verilator engine, the board gateware behind a pty, or "
                        "both (default verilator)")
    add_seed(b, "the faults' and inputs' seed")
    b = benchmark("torch", _torch, "TorchSP (the SP as a PyTorch layer): one SP, SPs in "
                                   "lockstep, batched inference; beside the golden model and "
                                   "the boards")
    b.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="torch device: cpu (default) or cuda (needs a CUDA build of torch)")
    b.add_argument("--threads", type=positive, metavar="N",
                   help="torch intra-op threads (default: torch's, one per core)")
    b.add_argument("--cells", type=positive, default=32, metavar="SIDE",
                   help="cells per side of the golden bench's config (default 32)")
    b.add_argument("--instances", type=positive, nargs="+", default=[1, 16, 256, 4096],
                   metavar="N", help="lockstep sizes to measure (default 1 16 256 4096)")
    b.add_argument("--compile", action="store_true",
                   help="the lockstep SPs learn through torch.compile (TorchSP(compile=True); "
                        "the first step of each size compiles, seconds)")
    b.add_argument("--min-seconds", type=positive_float, default=2.0,
                   help="time each figure over at least this long (default 2)")
    b = benchmark("quality", _quality, "SP quality on the golden model: readout accuracy, noise "
                                       "curves, usage, stability; means over seeds")
    add_config(b)
    b.add_argument("--board", metavar="NAME", type=board_name,
                   help="measure this board's default config (instead of --config)")
    b.add_argument("--seeds", type=positive, default=5, metavar="N",
                   help="seeds (config seed and data split) each figure is a mean over "
                        "(default 5)")
    b.add_argument("--tasks", type=_task_list, metavar="LIST",
                   help="comma-separated tasks (default: all: digits-thermometer, "
                        "digits-upsampled, random-patterns)")
    b.add_argument("--sweep", nargs="?", const="all", choices=["all", "global"],
                   help="the classic SP as a user runs it is the best of its documented "
                        "sweep per task: all 12 candidates (the local-inhibition half takes "
                        "hours at 32x32 cells on 2 cores) or the 6 with global inhibition")
    b.add_argument("--vary", type=_vary, action="append", metavar="FIELD=V1,V2",
                   help="also measure the cellular config with FIELD set to each value in "
                        "turn (repeatable; one field at a time)")
    b.add_argument("--grid", type=_vary, action="append", metavar="FIELD=V1,V2",
                   help="screen every combination of these fields' values instead (repeatable; "
                        "the cartesian product, ranked by how far each falls short of the "
                        "targets; cellular SP, raw input and the user's classic SP only)")
    b.add_argument("--limit", type=int_at_least(10), metavar="N",
                   help="only N digits (of each seed's shuffle) and N random patterns (quick "
                        "runs)")
    b.add_argument("--passes", type=int_at_least(2), metavar="N",
                   help="learning passes (default 3 over the digits, 10 over the patterns)")
    b.add_argument("--report", default="bench-results/quality-report", metavar="DIR",
                   help="report folder (Markdown and plots; default "
                        "bench-results/quality-report); created if missing, its files "
                        "replaced")
    _add_sweep_options(b, "systems measured on a task and seed")
    b = benchmark("mutations", _mutations, "the tests' mutation score per file: slips in the "
                                           "gateware, driver and golden model, each run "
                                           "against its file's tests")
    b.add_argument("--file", action="append", metavar="PATH", type=_mutated_file,
                   help="only the mutations of this file, e.g. hdl/pe.py (repeatable; "
                        "default: every file)")
    _add_sweep_options(b, "mutants (and unmutated test groups), each in its own processes")
    b.add_argument("--list", action="store_true",
                   help="print the mutations (and the equivalent ones' arguments), run nothing")
    b.add_argument("--rerun", metavar="JSON",
                   help="run only the mutants this earlier result does not report killed; the "
                        "killed ones are carried over into the scores")
    b = benchmark("formal", _formal, "formal proofs of the cell array and the protocol engine "
                                     "(SymbiYosys, Yices)")
    b.add_argument("--level", choices=["quick", "long"], default="long",
                   help="quick: the proofs of `make test`; long: every property on both array "
                        "kinds, larger sizes and depths (default long)")
    b.add_argument("--timeout", type=positive_float, default=900.0, metavar="SECONDS",
                   help="time limit of each proof (default 900)")
    b = benchmark("links", _links, "per board: the array at its clock, the UART per mode and "
                                   "reply format, the software SP on one core")
    b.add_argument("--board", action="append", metavar="NAME", type=board_name,
                   help="only this board (repeatable; default: every board)")
    b.add_argument("--builds", metavar="DIR",
                   help="folder searched for build reports (report.json) of each board's "
                        "arrays; an array without one is taken from the fit estimate (default "
                        "build, when it exists)")
    b.add_argument("--no-software", action="store_true",
                   help="skip timing the software SP")
    b.add_argument("--simulate", action="store_true",
                   help="also time each board's default array through its whole gateware in "
                        "the pty harness (Verilator, the board's clock and UART), STEP and "
                        "BATCH learning, in model cycles (a build of each, minutes)")
    b.add_argument("--steps", type=positive, default=100, metavar="N",
                   help="with --simulate: learning steps per format (default 100)")
    b.add_argument("--simulate-array", action="append", metavar="NAME", default=[],
                   help="with --simulate: also time this offered array (`cellsp boards` lists "
                        "them) of the boards that offer it (repeatable)")


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

    _check_sweep_options(args)
    out = _out(args)
    print("cellsp bench boards: the largest array meeting timing on each board (YoWASP "
          "builds of every candidate, as Dask jobs, each cached; expect tens of minutes)")
    names = args.board or None
    with tqdm(total=sweep.build_count(names), unit="build", leave=False,
              dynamic_ncols=True) as bar, _sweep_failures():
        def built(board: str) -> None:
            bar.set_description(board)
            bar.update(1)

        data = sweep.bench_boards(names, progress=built, log=bar.write, at_once=args.jobs,
                                  scheduler=args.scheduler, cache=True)
    print("\n".join(data["table"]))
    return _write(data, out)


def _links(args) -> int:
    # the fit estimate imports Amaranth (the PEs' ring layout): loaded when the bench runs
    from cellsp.host import bench_boards

    out = _out(args)
    if args.simulate_array and not args.simulate:
        raise UsageError("--simulate-array times an array in simulation: add --simulate")
    offered = {a.name for b in ([get_board(n) for n in args.board] if args.board
                                else BOARDS.values()) for a in b.arrays}
    unknown = sorted(set(args.simulate_array) - offered)
    if unknown:
        raise UsageError(f"--simulate-array {unknown[0]}: no board here offers it; the arrays "
                         f"offered: {', '.join(sorted(offered)) or 'none'} (`cellsp boards`)")
    if args.builds and not Path(args.builds).is_dir():
        raise UsageError(f"--builds {args.builds!r} is not a folder; give the folder your "
                         f"builds are in (`cellsp build --out`), or leave it out")
    boards = [get_board(n) for n in args.board] if args.board else None
    print("cellsp bench links: each board's arrays at its clock, the UART per mode and reply "
          "format, the software SP on one core of this machine")
    software = None if args.no_software else bench_boards.software_sp_inputs_per_s
    rows = bench_boards.board_rows(boards, build_root=args.builds or "build", software=software,
                                   progress=print)
    data = bench_boards.rows_json(rows)
    data["table"] = bench_boards.table_lines(rows)
    print("\n".join(data["table"]))
    if args.simulate:
        _simulate_links(args, rows, data, out)
        print("\n".join(data["simulated_table"]))
    return _write(data, out)


def _simulate_links(args, rows: list[dict], data: dict, out: Path) -> None:
    """`cellsp bench links --simulate`: each board's default array (and the offered arrays of
    ``--simulate-array``) timed in the pty harness (`cellsp.host.link_timing`), `data` written
    to `out` before the first and after each, so that a failure or an interruption part-way
    keeps the arithmetic and the boards timed."""
    # the pty harness builds the board gateware with Amaranth and Verilator
    from cellsp.host import bench_boards
    from cellsp.host.link_timing import time_link

    timed = 0
    data["simulated_table"] = bench_boards.simulated_lines(rows)
    _write(data, out)
    try:
        for row in rows:
            if row["array"] == "default" or row["array"] in args.simulate_array:
                board = get_board(row["board"])
                if row["array"] != "default":
                    board = board.for_array(row["array"])
                row["simulated"] = time_link(board, board.default_config,
                                             board.default_cells_per_pe, steps=args.steps,
                                             log=print)
                timed += 1
                data["simulated_table"] = bench_boards.simulated_lines(rows)
                _write(data, out)
    except (Exception, KeyboardInterrupt) as exc:
        kept = (f"{out} holds the arithmetic table and the {timed} board(s) timed before "
                f"(`simulated_table`)")
        raise stopped_part_way(exc, "while timing the links in simulation", kept) from exc


def _fuzz(args) -> int:
    # the fuzz bench runs the board gateware behind a pty (Amaranth): loaded when it runs
    from cellsp.host import bench_fuzz

    out = _out(args)
    print(f"cellsp bench fuzz: {args.frames:,} frames of faults between the driver and the "
          f"protocol engine ({args.target}), the device shadowed by the golden model")
    return _write(bench_fuzz.bench_fuzz(frames=args.frames, target=args.target, seed=args.seed,
                                        progress=print, log=print), out)


def _torch(args) -> int:
    # torch is an optional extra (and seconds to import): loaded when this bench runs
    try:
        from cellsp.host import bench_torch
    except ImportError as exc:
        raise ValueError(f"cannot import torch ({exc}); install the extra: pip install -e "
                         f"'.[torch]' (make test does)") from None

    device = bench_torch.check_device(args.device)
    out = _out(args)
    print(f"cellsp bench torch: TorchSP on {device} beside the golden model, the software SP "
          f"and the boards' arrays (4,096 SPs take a minute to build; expect minutes)")
    data = bench_torch.bench_torch(cells=args.cells, instances=args.instances, device=device,
                                   threads=args.threads, min_seconds=args.min_seconds,
                                   compile=args.compile, progress=print)
    print("\n".join(data["table"]))
    print("\n".join(bench_torch.target_lines(data)))
    return _write(data, out)


def _task_list(text: str) -> list[str]:
    """An argument type: comma-separated names of `cellsp.sim.quality.TASKS`."""
    # the quality module loads scikit-learn: only this benchmark needs it
    from cellsp.sim import quality

    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in quality.TASKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown task {', '.join(unknown) or repr(text)}; "
                                         f"tasks: {', '.join(quality.TASKS)}")
    return names


def _vary(text: str) -> tuple[str, list]:
    """An argument type: FIELD=V1,V2,... of an SPConfig field, each value of the field's type."""
    name, sep, values = text.partition("=")
    default = getattr(SPConfig(), name.strip(), None) if sep else None
    if default is None or name.strip() in ("input_shape", "cell_shape") or not values.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=V1,V2 with FIELD a scalar SPConfig field "
                                         f"(e.g. perm_dec=2,4,8)")
    kind = type(default)
    try:
        return name.strip(), [kind(v.strip()) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {name.strip()} takes values of type "
                                         f"{kind.__name__}") from None


def _add_sweep_options(b, what: str) -> None:
    """--jobs and --scheduler: where a sweep's jobs run (`cellsp.sim.jobs.run_jobs`)."""
    b.add_argument("--jobs", type=int_at_least(0), metavar="N",
                   help=f"{what}: at most N at once (default: one per core, on a local Dask "
                        f"cluster listening on 127.0.0.1 only; 0: one after the other in this "
                        f"process)")
    b.add_argument("--scheduler", type=_scheduler_address, metavar="ADDRESS",
                   help="run the jobs on this Dask cluster's scheduler (tcp://HOST:8786, or "
                        "tls://HOST:8786 with a TLS configuration; see the README's 'Sweeps on "
                        "one machine and on a cluster')")


def _check_sweep_options(args) -> None:
    """--jobs 0 (in this process) and --scheduler (on a cluster) exclude each other."""
    if args.jobs == 0 and args.scheduler:
        raise UsageError("--jobs 0 runs the jobs in this process and --scheduler on a cluster; "
                         "give one of them")


def _scheduler_address(text: str) -> str:
    """An argument type: a Dask scheduler address, PROTOCOL://HOST:PORT."""
    protocol, sep, rest = text.partition("://")
    if not sep or protocol not in ("tcp", "tls") or ":" not in rest:
        raise argparse.ArgumentTypeError(f"{text!r}: expected tcp://HOST:PORT or "
                                         f"tls://HOST:PORT (a `dask scheduler`'s address)")
    return text


@contextmanager
def _sweep_failures():
    """Jobs that could not run, or failed every try, end the command with a one-line error."""
    try:
        yield
    except jobs.JobsError as exc:
        raise CommandFailed(str(exc)) from None


def _quality(args) -> int:
    # the quality benchmark loads scikit-learn and matplotlib: only when it runs
    from cellsp.host import bench_quality
    from cellsp.sim import quality

    if args.config and args.board:
        raise UsageError("--config and --board both give the config; give one of them")
    _check_sweep_options(args)
    config = get_board(args.board).default_config if args.board else load_config(args.config)
    vary = dict(args.vary or [])
    quality.vary_candidates(config, vary)     # an impossible value fails before any work
    if args.grid:
        return _quality_grid(args, config)
    tasks = args.tasks or list(quality.TASKS)
    out = _out(args)
    report = output_dir(args.report, "--report")
    steps = quality.total_steps(config, args.seeds, tasks, args.sweep, vary, args.limit,
                                args.passes)
    print(f"cellsp bench quality: config {config.hash}"
          f"{f' (board {args.board})' if args.board else ''}, {config.cell_shape[0]}x"
          f"{config.cell_shape[1]} cells, on the golden model; {args.seeds} seeds, tasks "
          f"{', '.join(tasks)}")
    with tqdm(total=steps, unit="step", leave=False, dynamic_ncols=True,
              desc="learning") as bar, _sweep_failures():
        data = bench_quality.bench_quality(config, seeds=args.seeds, tasks=tasks,
                                           sweep=args.sweep, vary=vary, limit=args.limit,
                                           passes=args.passes, board=args.board,
                                           progress=bar.update, log=bar.write,
                                           at_once=args.jobs, scheduler=args.scheduler,
                                           cache=True)
    files = bench_quality.write_report(data, report)
    print(f"{data['seconds']:.0f} s; wrote {', '.join(str(report / f) for f in files)}")
    return _write(data, out)


def _quality_grid(args, config) -> int:
    """`cellsp bench quality --grid`: the screen of `cellsp.sim.quality.run_grid`."""
    # the quality benchmark loads scikit-learn: only when it runs
    from cellsp.host import bench_quality
    from cellsp.sim import quality

    if args.vary:
        raise UsageError("--vary and --grid both choose the candidates; give one of them")
    grid = dict(args.grid)
    candidates = quality.grid_candidates(config, grid)   # an impossible value fails first
    tasks = args.tasks or list(quality.TASKS)
    out = _out(args)
    report = output_dir(args.report, "--report")
    steps = quality.grid_steps(config, grid, args.seeds, tasks, args.sweep, args.limit,
                               args.passes)
    print(f"cellsp bench quality: a grid of {len(candidates)} configs around {config.hash} on "
          f"the golden model; {args.seeds} seeds, tasks {', '.join(tasks)}")
    with tqdm(total=steps, unit="step", leave=False, dynamic_ncols=True,
              desc="learning") as bar:
        data = bench_quality.bench_grid(config, grid, seeds=args.seeds, tasks=tasks,
                                        sweep=args.sweep, limit=args.limit,
                                        passes=args.passes, board=args.board,
                                        progress=bar.update)
    print("\n".join(bench_quality.grid_lines(data)))
    files = bench_quality.write_grid_report(data, report)
    print(f"{data['seconds']:.0f} s; wrote {', '.join(str(report / f) for f in files)}")
    return _write(data, out)


def _mutated_file(text: str) -> str:
    """A file with mutations in the list (for --file)."""
    files = sorted({m.file for m in mutations.MUTATIONS})
    if text not in files:
        raise argparse.ArgumentTypeError(f"no mutations of {text!r}; the files: "
                                         f"{', '.join(files)}")
    return text


def _mutations(args) -> int:
    chosen = [m for m in mutations.MUTATIONS if not args.file or m.file in args.file]
    if args.list:
        print("\n".join(mutations.list_lines(chosen)))
        return 0
    if not (mutations.ROOT / "tests").is_dir():
        raise UsageError(f"the mutation runner needs a source checkout (no tests/ folder in "
                         f"{mutations.ROOT}): install cellsp editable from a clone "
                         f"(pip install -e .) and run it there")
    previous = None
    if args.rerun:
        path = input_file(args.rerun, "--rerun", "give the JSON of an earlier `cellsp bench "
                                                 "mutations` run")
        try:
            previous = json.loads(path.read_text())
            chosen = mutations.not_killed_in(previous, chosen)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--rerun {args.rerun!r} is not the JSON of a `cellsp bench "
                             f"mutations` run ({exc}); give one") from exc
    _check_sweep_options(args)
    out = _out(args)
    at_once = ("one per core" if args.jobs is None and not args.scheduler
               else "one per worker thread" if args.jobs is None else args.jobs)
    print(f"cellsp bench mutations: {len(chosen)} mutants, {at_once} at a time, each against "
          f"its file's tests (the unmutated tests first; expect tens of minutes)", flush=True)
    with _sweep_failures():
        data = mutations.run_mutants(chosen, jobs=args.jobs, scheduler=args.scheduler,
                                     cache=True, progress=lambda line: print(line, flush=True))
    if previous is not None:
        data = mutations.merge_rerun(previous, data)
    print("\n".join(mutations.report_lines(data)))
    return _write(data, out)


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
