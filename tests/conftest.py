"""Shared test setup: let the mutation test (test_mutations.py) load a mutated copy of a
cellsp package in a subprocess."""
import importlib.util
import os
import sys
from pathlib import Path

# CELLSP_OVERRIDE="sim=/path/to/copy,hdl=/path/to/other": import those subpackages from the
# given folders instead (used by test_mutations.py to test mutated copies).
for _item in filter(None, os.environ.get("CELLSP_OVERRIDE", "").split(",")):
    _name, _path = _item.split("=", 1)
    import cellsp  # noqa: F401 - the namespace package must exist first

    _spec = importlib.util.spec_from_file_location(
        f"cellsp.{_name}", Path(_path) / "__init__.py", submodule_search_locations=[_path])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[f"cellsp.{_name}"] = _module
    _spec.loader.exec_module(_module)
