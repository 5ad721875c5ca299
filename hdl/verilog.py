"""Verilog export of the cell array with one module per kind of cell.

Converting 256 or 1024 cells one by one makes tens of megabytes of Verilog and takes minutes;
but cells differ only in which neighbours exist and which of them have the lower raster index.
So each kind of cell is converted once, and the array instantiates those modules.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

from amaranth.back import verilog

from .array import CellArray
from .cell import Cell
from .geometry import ArrayGeometry

__all__ = ["array_verilog", "environment"]

_PORT = re.compile(r"^\s*(?:input|output)\s*(?:\[[^\]]*\])?\s*(\S+);", re.M)


@contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the duration of a block (tools read os.environ)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def array_verilog(geometry: ArrayGeometry, name: str = "cellsp_array") -> str:
    """Verilog text of the whole array: the cell modules, then the top module `name`."""
    # the bundled Yosys, whatever $YOSYS says
    with environment({"AMARANTH_USE_YOSYS": "builtin"}):
        kinds: dict[tuple, tuple[str, set[str]]] = {}
        texts = []
        modules = {}
        for c in range(geometry.config.num_cells):
            key = CellArray.cell_kind(geometry, c)
            if key not in kinds:
                module = f"{name}_cell{len(kinds)}"
                text = verilog.convert(Cell(geometry.config, 0, *key), name=module)
                kinds[key] = (module, set(_PORT.findall(text)))
                texts.append(text)
            modules[c] = kinds[key]
        texts.append(verilog.convert(CellArray(geometry, cell_modules=modules), name=name))
    return "\n".join(texts)
