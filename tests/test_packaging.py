"""The package layout: every top-level folder installs as a cellsp.* subpackage, both from a
built wheel and from the editable install the Makefile makes."""

import subprocess
import sys
import zipfile
from pathlib import Path

import cellsp.boards
import cellsp.hdl
import cellsp.host
import cellsp.sim
from cellsp.host.verilator_build import LINK_HARNESS, PTY_HARNESS

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("hdl", "sim", "host", "boards")
HARNESS = sorted(p.name for p in (ROOT / "host" / "harness").iterdir()
                 if p.suffix in (".cpp", ".h", ".v"))


def test_editable_install_maps_the_folders():
    for module, folder in zip((cellsp.hdl, cellsp.sim, cellsp.host, cellsp.boards), SUBPACKAGES):
        assert Path(module.__file__).resolve().parent == ROOT / folder


def test_wheel_contains_only_cellsp(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("cellsp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"cellsp", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    for sub in SUBPACKAGES:
        assert f"cellsp/{sub}/__init__.py" in names
    assert "cellsp/sim/golden.py" in names and "cellsp/host/cli/__init__.py" in names
    assert not any(n.startswith("cellsp/tests") for n in names)
    assert {"harness.h", "link_main.cpp", "pty_main.cpp", "cellsp_link_wrapper.v",
            "cellsp_pty_wrapper.v"} <= set(HARNESS)
    for name in HARNESS:                       # the Verilator harnesses, as package data
        assert f"cellsp/host/harness/{name}" in names, name


def test_harness_files_are_read_from_the_installed_package():
    for harness in (LINK_HARNESS, PTY_HARNESS):
        for name, text in harness.files.items():
            assert text == (ROOT / "host" / "harness" / name).read_text(), name
