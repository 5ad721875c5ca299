"""The exported Verilog is the same text in any checkout, so cached Verilator models (keyed by
a hash of the sources that generate it, `cellsp.hdl.sources`, which is the same in any
checkout too) are shared between checkouts and virtual environments."""

import shutil
import subprocess
import sys
from pathlib import Path

from cellsp.sim.geometry import ArrayGeometry
from cellsp.hdl.verilog import engine_verilog
from cellsp.sim import SPConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = SPConfig(cell_shape=(4, 4), input_shape=(8, 8), potential_radius=1)

# cellsp.hdl imported from another folder (as tests/conftest.py's CELLSP_OVERRIDE does)
_OTHER_CHECKOUT = """
import importlib.util, sys
from pathlib import Path
import cellsp
path = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("cellsp.hdl", path / "__init__.py",
                                              submodule_search_locations=[str(path)])
module = importlib.util.module_from_spec(spec)
sys.modules["cellsp.hdl"] = module
spec.loader.exec_module(module)
from cellsp.sim.geometry import ArrayGeometry
from cellsp.hdl.verilog import engine_verilog
from cellsp.sim import SPConfig
where = sys.modules["cellsp.hdl.verilog"].__file__
assert where.startswith(str(path)), where
config = SPConfig(cell_shape=(4, 4), input_shape=(8, 8), potential_radius=1)
sys.stdout.write(engine_verilog(ArrayGeometry.for_config(config, cells_per_pe=2)))
"""


def test_engine_verilog_names_no_absolute_path_and_is_the_same_in_another_checkout(tmp_path):
    text = engine_verilog(ArrayGeometry.for_config(TINY, cells_per_pe=2))
    assert 'src = "hdl/pe.py:' in text            # source locations kept, relative
    assert str(ROOT) not in text and "site-packages" not in text
    other = tmp_path / "elsewhere" / "hdl"
    shutil.copytree(ROOT / "hdl", other, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-c", _OTHER_CHECKOUT, str(other)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == text
