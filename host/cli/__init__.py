"""The `cellsp` command line: one module per command (`config`, `demo` and `compare`, `run`,
`verify`, `bench` with a subcommand per benchmark, `build` and `boards`), each declaring its
own options; the options several commands share come from `options`, the one-line failures
from `errors`. Nothing else in cellsp imports this package: library code returns results and
reports progress through the callbacks the commands pass in.

Every failure a user can cause or meet ends with one line on stderr, `cellsp CMD: error: WHAT
FAILED; WHAT TO DO`, and exit status 2 (`verify`: 1 for a mismatch; Ctrl-C: 130, SIGTERM:
143), with no traceback unless `--debug`. Paths and options are checked before any work
starts; outputs are written atomically and a file named on the command line is not replaced
without `--force`.
"""

from __future__ import annotations

import argparse
import sys

from cellsp.sim.processes import install_signal_handlers

from . import bench, boards, config, demo, run, verify
from .errors import ArgumentError, CommandFailed, Parser, describe, interrupt_code, interrupted
from .errors import one_line
from .options import add_debug

__all__ = ["main", "build_parser"]

#: the command modules, in the order `cellsp --help` lists their commands
COMMANDS = (demo, bench, boards, verify, run, config)


def build_parser() -> argparse.ArgumentParser:
    """The `cellsp` parser: a subparser per command, each from its module's `add_parser`."""
    parser = Parser(
        prog="cellsp",
        description="Cellular HTM spatial pooler: golden model, HDL, host driver, FPGA builds.",
        epilog="Errors end with one line on stderr, `cellsp COMMAND: error: ...`, and exit "
               "status 2 (verify: 1 for a mismatch; Ctrl-C 130, SIGTERM 143); --debug shows the "
               "traceback. Paths and options are checked before any work starts; output files "
               "are written whole or not at all, and a file you name is not replaced without "
               "--force (report and build folders and bench-results/WHAT.json are, as each "
               "command's help says).")
    add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of `argv` (default: the program's arguments); returns the exit status."""
    if argv is None:   # the program (not a test calling main): SIGTERM, SIGHUP unwind like ^C
        install_signal_handlers()
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except ArgumentError as exc:
        print(f"{exc.prog}: error: {one_line(exc.message)}; see `{exc.prog} --help`",
              file=sys.stderr)
        return 2
    except SystemExit as exc:   # --help
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:  # noqa: BLE001 - an option's check failed in itself
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"cellsp: error: {describe(exc)}", file=sys.stderr)
        return 2
    if not getattr(args, "run", None):
        print(f"cellsp: error: name a command ({', '.join(parser.commands)}); see "
              f"`cellsp --help`", file=sys.stderr)
        return 2
    name = args.parser.prog
    try:
        return args.run(args)
    except CommandFailed as exc:
        if args.debug:
            raise
        signal = exc.code > 128       # an interrupt says so itself
        print(f"{name}: {'' if signal else 'error: '}{one_line(exc)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        print(f"{name}: {interrupted(exc)}; nothing was written", file=sys.stderr)
        return interrupt_code(exc)
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line (--debug: all)
        if args.debug:
            raise
        print(f"{name}: error: {describe(exc)}", file=sys.stderr)
        return 2
