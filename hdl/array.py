"""The cell array: input plane, permanence memories, processing elements and the sequencer,
behind streams. `CellArray(geometry)` builds the kind of array the geometry asks for: the
serial array (`hdl.serial`) or, with `ArrayGeometry.parallel_count`, the count-parallel one
(`hdl.parallel`); both are `CellArrayBase`s with the same streams and state words.
"""

from __future__ import annotations

from amaranth.lib import wiring

from cellsp.sim.geometry import ArrayGeometry

from .array_base import CellArrayBase, Command, input_layout, output_layout, pe_kind
from .parallel import ParallelCellArray
from .serial import SerialCellArray

__all__ = ["CellArray", "CellArrayBase", "Command", "array_class", "input_layout", "make_pe",
           "output_layout", "pe_kind"]


def array_class(geometry: ArrayGeometry) -> type[CellArrayBase]:
    """The kind of cell array `geometry` asks for."""
    return ParallelCellArray if geometry.parallel_count else SerialCellArray


def make_pe(geometry: ArrayGeometry, q: int) -> wiring.Component:
    """PE q of the array for `geometry` (PEs of the same `pe_kind` are identical)."""
    return array_class(geometry).make_pe(geometry, q)


class CellArray:
    """The cellular spatial pooler of SPEC.md, bit-exact with `cellsp.sim.GoldenModel`:
    ``CellArray(geometry, pe_modules=None)`` is a `SerialCellArray`, or a `ParallelCellArray`
    when ``geometry.parallel_count``; its streams are described in `CellArrayBase`, its timing
    in each kind's documentation.

    `pe_modules`, for Verilog export only: {PE index: (module name, port names)} to instantiate
    each PE as a separately converted module (see `hdl.verilog`).
    """

    def __new__(cls, geometry: ArrayGeometry, pe_modules: dict | None = None) -> CellArrayBase:
        return array_class(geometry)(geometry, pe_modules)
