"""What `cellsp build` and `cellsp boards` do (host/cli.py parses the arguments)."""

from __future__ import annotations

import sys
from pathlib import Path

from .boards import BOARDS, Board, get_board

__all__ = ["build_command", "boards_table", "default_cells_per_pe"]

# Debian packages of the programmers (for the message when one is missing)
_PROGRAMMER_PACKAGES = {"iceprog": "fpga-icestorm", "openFPGALoader": "openfpgaloader"}


def default_cells_per_pe(board: Board, config) -> int:
    """The board's cells per PE when `config` allows it, else the largest allowed value below
    it (fewer cells per PE: more logic, fewer cycles). A board whose default array has PEs
    serving parts of rows keeps to those (divisors of the columns); one with band PEs (the
    iCEBreaker) may take bands of rows (`ArrayGeometry.cells_per_pe_choices`)."""
    from cellsp.sim.geometry import ArrayGeometry

    columns = config.cell_shape[1]
    choices = ArrayGeometry.for_config(config).cells_per_pe_choices()
    if board.geometry(board.default_config, board.default_cells_per_pe).separable:
        choices = [d for d in choices if columns % d == 0]
    return max(d for d in choices if d <= board.default_cells_per_pe)


def boards_table() -> str:
    """The boards, their devices and limits, clock, baud and programmer, as aligned text."""
    head = ("board", "device", "logic", "FFs", "block RAM", "SPRAM", "DSP", "clock", "baud",
            "programmer", "default array")
    rows = [head]
    for b in BOARDS.values():
        d = b.device
        h, w = b.default_config.cell_shape
        rows.append((
            b.name, d.part, f"{d.logic:,} {'LC' if d.family == 'ice40' else 'LUT4'}",
            f"{d.ffs:,}", f"{d.bram} x {'4' if d.family == 'ice40' else '18'} kbit",
            str(d.spram), str(d.dsp), f"{b.clock_hz / 1e6:g} MHz", f"{b.baud:,}",
            b.programmer,
            f"{h}x{w} cells, P={b.default_cells_per_pe}"
            + ("" if b.default_measured else " (guess)")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    lines.append("")
    lines += [f"{b.name}: {b.description}; UART through its {b.uart_bridge}"
              for b in BOARDS.values()]
    return "\n".join(lines)


def build_command(board: str, config=None, cells_per_pe: int | None = None,
                  out: str | None = None, program: bool = False, fit_check: bool = True,
                  config_file: str | None = None) -> int:
    """Build, print the report's main figures, the programming command and the command that
    runs the SP on the programmed board (`config_file`: where `config` came from, for that
    command); returns the exit status (1 when timing is missed or the build fails, 2 for a
    config that cannot fit)."""
    from .boards import FitError, check_fit
    from .build import BuildError, build_board

    b = get_board(board)
    if config is None:
        config, p = b.default_config, b.default_cells_per_pe
    else:
        p = default_cells_per_pe(b, config)
    if cells_per_pe is not None:
        if cells_per_pe < 1:
            raise ValueError(f"cells per PE must be at least 1, got {cells_per_pe}")
        p = cells_per_pe
    b.geometry(config, p)   # a cells per PE the array cannot take fails here, before Yosys
    out_dir = Path(out or Path("build") / b.name)
    h, w = config.cell_shape
    try:
        est = check_fit(b, config, p) if fit_check else None
    except FitError as exc:
        print(f"cellsp build: error: {exc}", file=sys.stderr)
        return 2
    print(f"cellsp build: {b.name} ({b.device.part}), {h}x{w} cells at {p} cells per PE, "
          f"config {config.hash[:12]}, {b.clock_hz / 1e6:g} MHz, {b.baud:,} baud; in {out_dir}")
    if est:
        print(f"  estimate: about {est.logic:,} {b.device.logic_name} of {b.device.logic:,}, "
              f"{est.ffs:,} flip-flops, {est.bram} block RAMs of {b.device.bram}")
    print("  running Yosys and nextpnr (YoWASP; the first run on a machine compiles them, "
          "about a minute)")
    try:
        report = build_board(b, config, p, out_dir, check=False)
    except BuildError as exc:
        print(f"cellsp build: error: {exc}", file=sys.stderr)
        return 1
    for line in report_lines(report):
        print(f"  {line}")
    print(f"  wrote {out_dir / 'report.json'} and {report['bitstream']}")
    if not report["timing_met"]:
        print(f"cellsp build: error: timing missed: the design reaches "
              f"{report['achieved_clock_mhz']} MHz and the board clocks it at "
              f"{report['target_clock_mhz']} MHz; do not program this bitstream; use fewer "
              f"cells or fewer cells per PE (see {out_dir}/cellsp.tim for the critical path)",
              file=sys.stderr)
        return 1
    command = " ".join(report["program_command"])
    print(f"  program the board with: {command}")
    options = "".join([f" --config {config_file}" if config_file else "",
                       f" --cells-per-pe {cells_per_pe}" if cells_per_pe else ""])
    print(f"  then run the SP on it (PORT: the board's USB serial port, e.g. /dev/ttyUSB1): "
          f"cellsp compare --board {b.name}{options} --transport serial:PORT")
    if program:
        if not b.programmer_found():
            package = _PROGRAMMER_PACKAGES.get(b.programmer, b.programmer)
            print(f"cellsp build: error: cannot program: {b.programmer} is not on PATH; install "
                  f"it (not a Python package; on Debian: apt-get install {package}) or run the "
                  f"command above on the machine the board is plugged into", file=sys.stderr)
            return 1
        print(f"  programming: {command}")
        from cellsp.sim import processes

        return processes.run(report["program_command"]).returncode
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
