"""The options several `cellsp` commands share, declared once so that each means the same
everywhere: `--config`, the hardware options (`--transport`, `--cells-per-pe`, `--board`,
`--array`, `--parallel`), `--seed`, `--steps`, `--force` and `--debug`, with the argument
types that check them before any work starts. `hardware(args)` turns the hardware options into
(config, cells per PE, transport)."""

from __future__ import annotations

import argparse

from cellsp.boards.boards import SERIAL_BAUD, Board, default_cells_per_pe, get_board
from cellsp.host.files import UsageError
from cellsp.host.serial_link import parse_serial_target
from cellsp.sim.config import SPConfig

__all__ = ["int_at_least", "positive", "float_in", "positive_float", "board_name", "transport",
           "load_config", "add_config", "add_hardware", "add_array", "board_of", "add_parallel",
           "add_seed", "add_steps", "add_force", "add_debug", "add_command", "hardware"]


def int_at_least(lo: int):
    """An argument type: an integer of at least `lo`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {lo}, got {value}")
        return value
    return parse


positive = int_at_least(1)


def float_in(lo: float, hi: float, hi_open: bool = False):
    """An argument type: a number from `lo` to `hi` (`hi` excluded when `hi_open`)."""
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


def positive_float(text: str) -> float:
    """An argument type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def board_name(text: str) -> str:
    """An argument type: the name of a board of `cellsp boards`."""
    try:
        return get_board(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def transport(text: str) -> str:
    """An argument type: verilator, amaranth or serial:PORT[@BAUD]."""
    if text in ("verilator", "amaranth"):
        return text
    if text.startswith("serial:"):
        try:
            parse_serial_target(text, SERIAL_BAUD)     # only checked here
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    raise argparse.ArgumentTypeError(f"unknown transport {text!r}: use verilator, amaranth or "
                                     f"serial:PORT[@BAUD]")


def load_config(path: str | None) -> SPConfig:
    """The config of a `--config FILE` (checked), or the default one."""
    return SPConfig() if path is None else SPConfig.from_json(path)


def add_config(p, default: str = "SPConfig()") -> None:
    """--config FILE."""
    p.add_argument("--config", metavar="FILE", help=f"SPConfig JSON (default: {default})")


def add_parallel(p) -> None:
    """--parallel: the count-parallel array."""
    p.add_argument("--parallel", action="store_true",
                   help="the count-parallel array: every cell of a PE counted at once (the same "
                        "results in about half the simulator's instructions; not for boards)")


def add_hardware(p, *, default_cells_per_pe: int, transport_default: str | None = "verilator",
                 transport_help: str = "verilator (default), amaranth, or serial:PORT[@BAUD]",
                 aliases: tuple[str, ...] = ()) -> None:
    """--config, --transport (and `aliases` of it), --cells-per-pe, --board and --parallel of
    a command that drives the hardware SP, read back by `hardware(args)`;
    `default_cells_per_pe` stands when neither --cells-per-pe nor --board gives one."""
    add_config(p)
    p.add_argument("--transport", *aliases, default=transport_default, metavar="T",
                   type=transport, help=transport_help)
    p.add_argument("--cells-per-pe", type=positive, metavar="P",
                   help=f"cells per processing element (default {default_cells_per_pe}, or the "
                        f"board's)")
    p.add_argument("--board", metavar="NAME", type=board_name,
                   help="a board of `cellsp boards`: its default config and cells per PE (as "
                        "`cellsp build --board` makes them) and its UART's baud rate")
    add_array(p)
    add_parallel(p)
    p.set_defaults(default_cells_per_pe=default_cells_per_pe)


def add_array(p) -> None:
    """--array NAME: an array the board of --board offers beside its default, read back by
    `board_of(args)`."""
    p.add_argument("--array", metavar="NAME",
                   help="with --board: an array the board offers beside its default "
                        "(`cellsp boards` lists them), as `cellsp build --array` builds it; "
                        "not with --config")


def board_of(args) -> Board | None:
    """The board of --board (None without one) as it builds the array of --array (its
    config, cells per PE, clock and synthesis options: `Board.for_array`); a UsageError for an
    --array without --board, with --config, or one the board does not offer."""
    array = getattr(args, "array", None)
    if not args.board:
        if array:
            raise UsageError(f"--array {array} names an array of a board; add --board NAME "
                             f"(`cellsp boards` lists the boards and their arrays)")
        return None
    board = get_board(args.board)
    if not array:
        return board
    if args.config:
        raise UsageError("--array and --config both name the array; give one")
    try:
        return board.for_array(array)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add_seed(p, help: str) -> None:
    """--seed N (at least 0, default 0)."""
    p.add_argument("--seed", type=int_at_least(0), default=0, help=help)


def add_steps(p, default: int, help: str) -> None:
    """--steps N (at least 1)."""
    p.add_argument("--steps", type=positive, default=default, help=help)


def add_force(p, what: str) -> None:
    """--force: replace `what` when it exists."""
    p.add_argument("--force", action="store_true",
                   help=f"replace {what} if it exists (default: refuse, before any work)")


def add_debug(p, default) -> None:
    """--debug: a traceback instead of the one-line error."""
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, show the Python traceback instead of the one-line message")


def add_command(subparsers, name: str, run, **kwargs):
    """A command (or a subcommand) `name` that `run(args)` carries out: its parser, with
    --debug; `kwargs` go to `add_parser` (help, description)."""
    p = subparsers.add_parser(name, **kwargs)
    add_debug(p, argparse.SUPPRESS)
    p.set_defaults(run=run, parser=p)
    return p


def hardware(args) -> tuple[SPConfig, int, str | None]:
    """(config, cells per PE, transport) from the options of `add_hardware`: a board stands
    for the config and cells per PE `cellsp build --board` uses by default, and for its UART's
    baud rate on a serial port given without one, and --array for an array it offers
    beside its default."""
    board = board_of(args)
    if args.config:
        cfg = load_config(args.config)
    else:
        cfg = board.default_config if board else load_config(None)
    p = args.cells_per_pe
    if p is None:
        if board:
            p = (board.default_cells_per_pe if not args.config
                 else default_cells_per_pe(board, cfg))
        else:
            p = args.default_cells_per_pe
    transport = args.transport
    if board and transport and transport.startswith("serial:") and "@" not in transport:
        transport = f"{transport}@{board.baud}"
    return cfg, p, transport
