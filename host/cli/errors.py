"""How a `cellsp` command fails: one line on stderr, `cellsp CMD: error: WHAT FAILED; WHAT TO
DO`, for every exception a command may end with (`describe`), and the exit status of an
interrupt (`interrupt_code`)."""

from __future__ import annotations

import argparse
import sys

from cellsp.host.driver import ConfigMismatch, DeviceError, DeviceTimeout
from cellsp.host.files import UsageError
from cellsp.host.serial_link import SerialPortError
from cellsp.host.verilator_build import VerilatorError
from cellsp.host.verilator_link import LinkError

__all__ = ["CommandFailed", "ArgumentError", "Parser", "describe", "one_line", "interrupted",
           "interrupt_code", "stopped_part_way"]


class CommandFailed(Exception):
    """A command stopped part-way; the message says what failed and what it kept; `code` is
    the exit status (2, or 128 + the signal for an interrupt)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class ArgumentError(Exception):
    """A command line argparse rejected: `prog` (e.g. 'cellsp run') and argparse's message."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog, self.message = prog, message


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `cellsp CMD: error: ...` (raised as
    `ArgumentError` to `main`, which prints it and exits 2)."""

    def error(self, message):
        """Raise `ArgumentError` instead of printing the usage and exiting."""
        raise ArgumentError(self.prog, message)


def interrupted(exc: KeyboardInterrupt) -> str:
    """'interrupted' for Ctrl-C, 'terminated by SIGTERM' (or SIGHUP) for the signals that
    `cellsp.sim.processes` turns into a KeyboardInterrupt carrying `signum`."""
    return str(exc) if getattr(exc, "signum", None) else "interrupted"


def interrupt_code(exc: KeyboardInterrupt) -> int:
    """The shell's status for death by that signal: 128 + its number (130 for SIGINT)."""
    return 128 + (getattr(exc, "signum", None) or 2)


def stopped_part_way(exc: BaseException, where: str, kept: str) -> CommandFailed:
    """The one-line failure of work stopped by `exc` part-way (`where`: e.g. "after 3 of 10
    inputs"), saying what was `kept`; an interruption keeps the shell's status for its
    signal."""
    if isinstance(exc, KeyboardInterrupt):
        return CommandFailed(f"{interrupted(exc)} {where}; {kept}", code=interrupt_code(exc))
    return CommandFailed(f"{describe(exc)}; stopped {where}: {kept}")


def one_line(text, limit: int = 600) -> str:
    """`text` with its white space runs made single spaces, cut at `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 30] + " ... (--debug shows all)"


#: what to do after each kind of failure ("": the message says it already)
_HINTS = [
    (ConfigMismatch, ""),
    (DeviceTimeout, "is the device running, programmed and on this port? Reset it and run again"),
    (DeviceError, "reset the device (or run again to restart the model) and run again"),
    (LinkError, "run again; if it fails again, run with --debug and report the output"),
    (SerialPortError, "check the cable and the port (`python -m serial.tools.list_ports`) and "
                      "run again"),
    ((UsageError, CommandFailed, ValueError), ""),
]


def _build_error():
    """`cellsp.boards.build.BuildError`, or () while that module is not loaded: it imports
    Amaranth, which a command that builds nothing does not load, and then no BuildError can
    have been raised."""
    build = sys.modules.get("cellsp.boards.build")
    return getattr(build, "BuildError", ())


def describe(exc: BaseException) -> str:
    """What failed and what to do, for any exception a command may end with."""
    message = one_line(exc)
    if isinstance(exc, OSError) and not isinstance(exc, SerialPortError):
        what = exc.strerror or message
        if exc.filename:
            return one_line(f"{exc.filename}: {what}; check the path, its folder and its "
                            f"permissions")
        return one_line(f"{what}; check the device, the disk and the paths given")
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return message if not hint or "; " in message else f"{message}; {hint}"
    if isinstance(exc, (_build_error(), VerilatorError)):
        return message if "; " in message else f"{message}; see the log it names"
    return one_line(f"internal error: {type(exc).__name__}: {exc}; please report it with the "
                    f"output of the same command with --debug")
