"""`cellsp boards` (the boards and what their devices hold) and `cellsp build` (a board's
bitstream and report, and programming it)."""

from __future__ import annotations

from pathlib import Path

from cellsp.boards.boards import BOARDS, default_cells_per_pe
from cellsp.host.files import UsageError, output_dir
from cellsp.sim import processes

from .errors import CommandFailed
from .options import (add_array, add_command, add_config, board_name, board_of, load_config,
                      positive)

__all__ = ["add_parser", "boards_table", "report_lines"]

# Debian packages of the programmers (for the message when one is missing)
_PROGRAMMER_PACKAGES = {"iceprog": "fpga-icestorm", "openFPGALoader": "openfpgaloader"}


def add_parser(sub) -> None:
    """Declare `cellsp build` and `cellsp boards`."""
    p = add_command(sub, "build", build,
                    help="build a bitstream for an FPGA board (YoWASP tools only)")
    p.add_argument("--board", required=True, metavar="NAME", type=board_name,
                   help="a board of `cellsp boards`")
    add_config(p, "the board's default array")
    p.add_argument("--cells-per-pe", type=positive, metavar="P",
                   help="cells per processing element (default: the board's, or the largest "
                        "divisor of the cell columns not above it)")
    p.add_argument("--out", metavar="DIR",
                   help="build folder (default: build/BOARD); created if missing, the files "
                        "of an earlier build in it are replaced")
    p.add_argument("--program", action="store_true",
                   help="program the board after a build that meets timing")
    p.add_argument("--no-fit-check", action="store_true",
                   help="build even when the estimate says the config cannot fit")
    add_array(p)
    p.add_argument("--parallel", action="store_true",
                   help="the count-parallel array (every cell of a PE counted at once: fewer "
                        "cycles an input, P synapse paths a PE)")
    add_command(sub, "boards", boards, help="list the FPGA boards and what their devices hold")


def _synthesis(board) -> str:
    """", synth_FAMILY OPTIONS" for a board built with Yosys options of its own, else ""."""
    return (f", synth_{board.device.family} {' '.join(board.synth_options)}"
            if board.synth_options else "")


def boards_table() -> str:
    """The boards, their devices and limits, clock, baud and programmer, as aligned text."""
    head = ("board", "device", "logic", "FFs", "block RAM", "SPRAM", "DSP", "clock",
            "baud (bridge max)", "programmer", "default array")
    rows = [head]
    for b in BOARDS.values():
        d = b.device
        h, w = b.default_config.cell_shape
        rows.append((
            b.name, d.part, f"{d.logic:,} {'LC' if d.family == 'ice40' else 'LUT4'}",
            f"{d.ffs:,}", f"{d.bram} x {'4' if d.family == 'ice40' else '18'} kbit",
            str(d.spram), str(d.dsp), f"{b.clock_hz / 1e6:g} MHz",
            f"{b.baud:,} ({b.bridge_max_baud:,})",
            b.programmer,
            f"{h}x{w} cells, P={b.default_cells_per_pe}"
            + ("" if b.default_measured else " (guess)")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    lines.append("")
    for b in BOARDS.values():
        lines.append(f"{b.name}: {b.description}; UART through its {b.uart_bridge} (up to "
                     f"{b.bridge_max_baud:,} baud) at {b.baud:,} baud, "
                     f"{b.bit_cycles:.3g} cycles a bit at {b.clock_hz / 1e6:g} MHz")
        for a in b.arrays:
            h, w = a.config.cell_shape
            built = b.for_array(a.name)
            differs = "".join([f", {built.clock_hz / 1e6:g} MHz" if built.clock_hz != b.clock_hz
                               else "",
                               f", {built.baud:,} baud" if built.baud != b.baud else "",
                               _synthesis(built)
                               if built.synth_options != b.synth_options else "",
                               f", nextpnr --placer {built.placer}"
                               if built.placer != b.placer else ""])
            kind = ", row-wide (a window row a cycle)" if a.row_scan else ""
            lines.append(f"  --array {a.name}: {h}x{w} cells, P={a.cells_per_pe}{kind}{differs}; "
                         f"{a.note}" + ("" if a.measured else " (not measured)"))
    return "\n".join(lines)


def boards(args) -> int:
    """List the boards and their device limits."""
    print(boards_table())
    return 0


def report_lines(report: dict) -> list[str]:
    """The main figures of a build report, one line each."""
    def used(field, name):
        u = report.get(field) or {}
        if not u.get("available"):
            return f"{name} {u.get('used', 0)}"
        return f"{name} {u['used']:,}/{u['available']:,} ({100 * u['used'] / u['available']:.0f}%)"

    return [
        ", ".join([used("logic", report["logic_unit"]), used("ffs", "FF"),
                   used("bram", "block RAM"), used("spram", "SPRAM"), used("dsp", "DSP")]),
        f"clock: {report['achieved_clock_mhz']} MHz achieved, {report['target_clock_mhz']} MHz "
        f"target: timing {'met' if report['timing_met'] else 'MISSED'}",
        f"{report['cycles_per_input']} cycles per input: "
        f"{report['inputs_per_s_at_target_clock']:,.0f} inputs/s at {report['target_clock_mhz']:g}"
        f" MHz; the UART at {report['baud']:,} baud carries {report['uart_inputs_per_s']:,.0f} "
        f"inputs/s one step at a time, {report['uart_pipelined']:,.0f} pipelined",
    ]


def build(args) -> int:
    """Build, print the report's main figures, the programming command and the command that
    runs the SP on the programmed board; program it with --program. Exits 1 when timing is
    missed or the build fails, 2 for a config that cannot fit."""
    # board builds import Amaranth and the board platforms: loaded when a build runs
    from cellsp.boards import build as board_build
    from cellsp.boards.fit import check_fit

    # an offered array (--array) comes with its own config, cells per PE, clock and options
    b = board_of(args)
    out_dir = output_dir(args.out or Path("build") / b.name, "--out")
    if args.config:
        config = load_config(args.config)
        p = default_cells_per_pe(b, config)
    else:
        config, p = b.default_config, b.default_cells_per_pe
    p = args.cells_per_pe or p
    # a cells per PE the array cannot take fails here, before Yosys
    geometry = b.geometry(config, p, parallel_count=args.parallel)
    h, w = config.cell_shape
    est = None if args.no_fit_check else check_fit(b, config, p, parallel_count=args.parallel)
    kind = "count-parallel" if args.parallel else (
        ("row-wide, " if geometry.row_scan else "")
        + ("rings' long runs in memory" if geometry.ring_memory_min else "rings in flip-flops"))
    synthesis = _synthesis(b)
    print(f"cellsp build: {b.name} ({b.device.part}), {h}x{w} cells at {p} cells per PE "
          f"({kind}{synthesis}), config {config.hash[:12]}, {b.clock_hz / 1e6:g} MHz, "
          f"{b.baud:,} baud; in {out_dir}")
    if est:
        print(f"  estimate: about {est.logic:,} {b.device.logic_name} of {b.device.logic:,}, "
              f"{est.ffs:,} flip-flops, {est.bram} block RAMs of {b.device.bram}")
    print("  running Yosys and nextpnr (YoWASP; the first run on a machine compiles them, "
          "about a minute)")
    try:
        report = board_build.build_board(b, config, p, out_dir, check=False,
                                         parallel_count=args.parallel)
    except board_build.BuildError as exc:
        raise CommandFailed(str(exc), code=1) from exc
    for line in report_lines(report):
        print(f"  {line}")
    print(f"  wrote {out_dir / 'report.json'} and {report['bitstream']}")
    if not report["timing_met"]:
        raise CommandFailed(
            f"timing missed: the design reaches {report['achieved_clock_mhz']} MHz and the "
            f"board clocks it at {report['target_clock_mhz']} MHz; do not program this "
            f"bitstream; use fewer cells or fewer cells per PE (see {out_dir}/cellsp.tim for "
            f"the critical path)", code=1)
    command = " ".join(report["program_command"])
    print(f"  program the board with: {command}")
    options = "".join([f" --array {args.array}" if args.array else "",
                       f" --config {args.config}" if args.config else "",
                       f" --cells-per-pe {args.cells_per_pe}" if args.cells_per_pe else "",
                       " --parallel" if args.parallel else ""])
    print(f"  then run the SP on it (PORT: the board's USB serial port, e.g. /dev/ttyUSB1): "
          f"cellsp compare --board {b.name}{options} --transport serial:PORT")
    if not args.program:
        return 0
    if not b.programmer_found():
        package = _PROGRAMMER_PACKAGES.get(b.programmer, b.programmer)
        raise CommandFailed(
            f"cannot program: {b.programmer} is not on PATH; install it (not a Python "
            f"package; on Debian: apt-get install {package}) or run the command above on the "
            f"machine the board is plugged into", code=1)
    print(f"  programming: {command}")
    return processes.run(report["program_command"]).returncode
