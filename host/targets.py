"""Opening a driver on a target: `open_driver("verilator", geometry)`, or a board (or the board
gateware's pty harness) on a serial port: `open_driver("serial:/dev/ttyUSB1@3000000", geometry)`."""

from __future__ import annotations

from cellsp.boards.boards import SERIAL_BAUD
from cellsp.hdl.sources import gateware_key

from .driver import Driver, Transport
from .serial_link import SerialTransport, parse_serial_target
from .verilator_link import VerilatorLink

__all__ = ["open_driver", "LinkTransport", "verilator_link"]


class LinkTransport(Transport):
    """A `VerilatorLink` as a driver transport: `read` returns as soon as bytes arrive."""

    def __init__(self, link):
        self.link = link

    def write(self, data: bytes) -> None:
        """Send `data` to the model."""
        self.link.write(data)

    def read(self, timeout: float) -> bytes:
        """What the model has sent: waits up to `timeout` for a first byte, then takes every
        byte already there."""
        first = self.link.read(1, timeout)
        if not first:
            return b""
        return first + self.link.read(self.link.pending(), 0)

    def close(self) -> None:
        """Close the link (the model process ends)."""
        self.link.close()


def verilator_link(geometry) -> VerilatorLink:
    """The compiled Verilator model of the protocol engine and array for `geometry`, built
    once per config, geometry, gateware source and tool version (cached under
    $CELLSP_CACHE/verilator). A cached model is found without generating its Verilog (nor
    importing Amaranth): see `cellsp.hdl.sources`. A build prints its progress on stderr."""
    def verilog() -> str:
        # Amaranth is imported only when the model is built: a cached one opens without it
        from cellsp.hdl.verilog import engine_verilog

        return engine_verilog(geometry, name="cellsp_engine")

    cfg = geometry.config
    # measured on 2 idle cores: 32x32 cells at 16 a PE (64 PEs) 76 s; count-parallel about 3x
    seconds = (20 + geometry.num_pes) * (3 if geometry.parallel_count else 1)
    return VerilatorLink(verilog, top="cellsp_engine",
                         name=f"cellsp-{cfg.hash[:8]}-p{geometry.cells_per_pe}",
                         key=gateware_key("engine", geometry, "cellsp_engine",
                                          modules=("cellsp.hdl.verilog", "cellsp.hdl.protocol")),
                         describe=f"building the Verilator model of {cfg.cell_shape[0]}x"
                                  f"{cfg.cell_shape[1]} cells ({geometry.cells_per_pe} per PE) "
                                  f"with its protocol engine, once per config",
                         expected_s=seconds)


def open_driver(target: str, geometry, timeout: float = 5.0, log=None) -> Driver:
    """A connected driver: target 'verilator' (the compiled model), 'amaranth' (the
    simulator; tiny configs only) or 'serial:PORT[@BAUD]' (a board's UART, by default at the
    iCEBreaker's 3,000,000 baud; or the pty of `cellsp.host.pty_link`)."""
    if target == "verilator":
        link = verilator_link(geometry)
        link.open()
        return Driver(LinkTransport(link), geometry, timeout=timeout, log=log)
    if target == "amaranth":
        # the simulated engine imports Amaranth, which the other targets do without
        from cellsp.hdl.protocol import ProtocolEngine

        from .amaranth_link import AmaranthLink

        return Driver(AmaranthLink(ProtocolEngine(geometry)), geometry, timeout=timeout,
                      log=log)
    if target.startswith("serial:"):
        port, baud = parse_serial_target(target, SERIAL_BAUD)
        transport = SerialTransport(port, baud)
        try:
            return Driver(transport, geometry, timeout=timeout, log=log)
        except BaseException:
            transport.close()
            raise
    raise ValueError(f"unknown transport {target!r}: use verilator, amaranth or serial:PORT")
