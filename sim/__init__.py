"""cellsp.sim: the golden model (the bit-exact definition of the array), the classic software SP,
and the simulation runners."""

from .config import ConfigError, SPConfig
from .golden import GoldenModel, SPState, check_inputs
from .software_sp import HtmCoreSP, SoftwareSP

__all__ = ["SPConfig", "ConfigError", "GoldenModel", "SPState", "check_inputs", "SoftwareSP",
           "HtmCoreSP"]
