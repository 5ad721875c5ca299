"""Shared test setup: make the test helpers (reference_sp) importable, and let the mutation
test (test_mutations.py) load a mutated copy of cellsp.sim in a subprocess."""
import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

_override = os.environ.get("CELLSP_SIM_OVERRIDE")
if _override:
    import cellsp  # the namespace package

    spec = importlib.util.spec_from_file_location(
        "cellsp.sim", Path(_override) / "__init__.py", submodule_search_locations=[_override])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cellsp.sim"] = module
    spec.loader.exec_module(module)
