"""Verilog export of the cell array with one module per kind of processing element.

Converting 256 or 1024 cells one by one makes tens of megabytes of Verilog and takes minutes;
but processing elements differ only in which of their cells' neighbours exist and which of them
have the lower raster index. So each kind of PE is converted once, and the array instantiates
those modules.

The texts are portable: the ``src`` attributes name files relative to their checkout or
installation (``hdl/pe.py:123``, ``amaranth/lib/wiring.py:...``), so the same design converted in
another checkout or virtual environment gives the same text, and the Verilator models cached
under its hash are shared.
"""

from __future__ import annotations

import functools
import os
import re
import sysconfig
from pathlib import Path

import amaranth
from amaranth.back import verilog

from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.processes import environment

from .array import CellArray, make_pe, pe_kind
from .protocol import ProtocolEngine

__all__ = ["array_verilog", "convert", "engine_verilog", "pe_modules"]

_PORT = re.compile(r"^\s*(?:input|output)\s*(?:\[[^\]]*\])?\s*(\S+);", re.M)


@functools.cache
def _source_roots() -> list[str]:
    """Folders whose prefix `convert` strips from file names, the longest first (a virtual
    environment may lie inside the checkout)."""
    roots = {Path(__file__).resolve().parent.parent,         # the checkout (hdl/ is in it)
             Path(amaranth.__file__).resolve().parent.parent,  # site-packages
             Path(sysconfig.get_paths()["stdlib"]).resolve()}
    return sorted((str(root) + os.sep for root in roots), key=len, reverse=True)


def convert(elaboratable, name: str) -> str:
    """`amaranth.back.verilog.convert` with the bundled Yosys, whatever $YOSYS says (a board
    build may set it to YoWASP's), and with file names in ``src`` attributes made relative (see
    the module's documentation)."""
    with environment({"AMARANTH_USE_YOSYS": "builtin"}):
        text = verilog.convert(elaboratable, name=name)
    for root in _source_roots():
        text = text.replace(root, "")
    return text


def pe_modules(geometry: ArrayGeometry, name: str) -> tuple[list[str], dict]:
    """Each kind of PE of the array for `geometry` converted once, as modules named
    ``{name}_pe0``, ``{name}_pe1``...: (their Verilog texts, {PE index: (module name, port
    names)}), the second to build the array with (``CellArray(geometry, pe_modules=...)``)."""
    kinds: dict[tuple, tuple[str, set[str]]] = {}
    texts = []
    modules = {}
    for q in range(geometry.num_pes):
        kind = pe_kind(geometry, q)
        key = tuple(kind)
        if key not in kinds:
            module = f"{name}_pe{len(kinds)}"
            text = convert(make_pe(geometry, q), name=module)
            kinds[key] = (module, set(_PORT.findall(text)))
            texts.append(text)
        modules[q] = kinds[key]
    return texts, modules


def array_verilog(geometry: ArrayGeometry, name: str = "cellsp_array") -> str:
    """Verilog text of the whole array: the PE modules, then the top module `name`."""
    texts, modules = pe_modules(geometry, name)
    texts.append(convert(CellArray(geometry, pe_modules=modules), name=name))
    return "\n".join(texts)


def engine_verilog(geometry: ArrayGeometry, name: str = "cellsp_engine",
                   timeout: int = 1 << 16) -> str:
    """Verilog text of the protocol engine with its array (ports: clk, rst, rx, tx)."""
    texts, modules = pe_modules(geometry, name)
    engine = ProtocolEngine(geometry, timeout=timeout,
                            array=CellArray(geometry, pe_modules=modules))
    texts.append(convert(engine, name=name))
    return "\n".join(texts)
