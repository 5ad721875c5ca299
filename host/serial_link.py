"""A serial port (a board's USB UART, or the pty of `cellsp.host.pty_link`) as a driver transport.

    driver = open_driver("serial:/dev/ttyUSB1@3000000", geometry)

A background thread reads the port (pyserial, short blocking reads) into a buffer, so
`SerialTransport.read` returns as soon as bytes have arrived and never waits longer than its
timeout, without reconfiguring the port for each call's timeout (pyserial's ``timeout``
setter rewrites the port's settings).
"""

from __future__ import annotations

import threading
import time

import serial

from .driver import Transport

__all__ = ["SerialTransport", "SerialPortError", "parse_serial_target"]


#: the largest baud rate a port is asked for (the OS takes it as a C int; boards run far below)
MAX_BAUD = 2**31 - 1


class SerialPortError(RuntimeError):
    """The serial port cannot be opened, or failed while in use; the message says which."""


def parse_serial_target(target: str, default_baud: int) -> tuple[str, int]:
    """'serial:PORT' or 'serial:PORT@BAUD' -> (PORT, BAUD)."""
    spec = target.removeprefix("serial:")
    port, sep, baud = spec.rpartition("@")
    if not sep:
        port, baud = spec, ""
    if not port:
        raise ValueError(f"transport {target!r}: name the port, e.g. serial:/dev/ttyUSB1 or "
                         f"serial:/dev/ttyUSB1@{default_baud}")
    if not baud:
        return port, default_baud
    if not (baud.isascii() and baud.isdigit()) or not 0 < int(baud) <= MAX_BAUD:
        raise ValueError(f"transport {target!r}: the baud rate after '@' must be an integer "
                         f"from 1 to {MAX_BAUD:,}, e.g. serial:{port}@{default_baud}")
    return port, int(baud)


class SerialTransport(Transport):
    """`Transport` over a serial port at `baud` (8N1, no flow control).

    `poll_interval`: how long the reader thread's reads block (a bound on how long `close`
    takes); `write_timeout`: seconds a write may block (a port nobody drains) before
    `SerialPortError`. Input already waiting when the port opens is discarded.
    """

    def __init__(self, port: str, baud: int, poll_interval: float = 0.05,
                 write_timeout: float = 5.0):
        self.port, self.baud = port, baud
        try:
            self.serial = serial.Serial(port, baud, timeout=poll_interval,
                                        write_timeout=write_timeout)
        except (serial.SerialException, OSError, ValueError, OverflowError) as exc:
            raise SerialPortError(
                f"cannot open serial port {port!r} at {baud} baud: {exc}. Is the board plugged "
                f"in and programmed, and is this its UART? List the ports with `python -m "
                f"serial.tools.list_ports`; on Linux, permission denied means joining the "
                f"'dialout' group (or a udev rule)") from None
        self.serial.reset_input_buffer()
        self._buffer = bytearray()
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._reader, name=f"serial-{port}", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._closing:
            try:
                data = self.serial.read(max(1, self.serial.in_waiting))
            except Exception as exc:  # noqa: BLE001 - handed to the reader of the data
                with self._cond:
                    if not self._closing:
                        self._error = exc
                    self._cond.notify_all()
                return
            if data:
                with self._cond:
                    self._buffer += data
                    self._cond.notify_all()

    def write(self, data: bytes) -> None:
        """Send `data`; `SerialPortError` when the port fails or nothing drains it."""
        try:
            self.serial.write(data)
        except serial.SerialTimeoutException:
            raise SerialPortError(f"serial port {self.port!r}: writing {len(data)} bytes timed "
                                  f"out (nothing is taking data from the port)") from None
        except (serial.SerialException, OSError) as exc:
            raise SerialPortError(f"serial port {self.port!r} failed while writing: {exc} "
                                  f"(unplugged?)") from None

    def read(self, timeout: float) -> bytes:
        """What has arrived: returns as soon as there is at least one byte, or b"" after
        `timeout` seconds. Raises `SerialPortError` if the port failed and nothing is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._buffer and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            data = bytes(self._buffer)
            self._buffer.clear()
            error = self._error
        if not data and error is not None:
            raise SerialPortError(f"serial port {self.port!r} failed while reading: {error} "
                                  f"(unplugged, or the device closed it?)")
        return data

    def close(self) -> None:
        """Stop the reader thread and close the port."""
        self._closing = True
        try:
            self.serial.cancel_read()           # wakes the reader thread's blocking read
        except Exception:  # noqa: BLE001 - not every port type supports it
            pass
        self._thread.join(timeout=2.0)
        self.serial.close()
