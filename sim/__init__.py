"""cellsp.sim: the golden model (the bit-exact definition of the array), the classic software SP,
and the simulation runners."""

from .config import ConfigError, SPConfig
from .golden import GoldenModel, SPState, check_inputs
from .software_sp import HtmCoreSP, SoftwareSP

__all__ = ["SPConfig", "ConfigError", "GoldenModel", "SPState", "check_inputs", "SoftwareSP",
           "HtmCoreSP"]


def __getattr__(name: str):
    """`cellsp.sim.TorchSP`, the PyTorch layer, imported on first access: torch is an optional
    extra (`pip install cellsp[torch]`), and `import cellsp.sim` never loads it."""
    if name == "TorchSP":
        from .torch_sp import TorchSP  # optional, heavy: loaded only when asked for

        return TorchSP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
