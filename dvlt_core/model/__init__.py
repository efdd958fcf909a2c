"""The DVLT network: ``DVLTModel`` and its constructor arguments ``DVLTConfig``."""

from dvlt_core.model.config import DEFAULT_NUM_STEPS, DVLTConfig
from dvlt_core.model.dvlt import DVLTModel
from dvlt_core.model.precision import PRECISIONS, autocast_for, run_model
from dvlt_core.model.schedule import InferencePlan, linspace_t_pairs

__all__ = [
    "DEFAULT_NUM_STEPS",
    "PRECISIONS",
    "DVLTConfig",
    "DVLTModel",
    "InferencePlan",
    "autocast_for",
    "linspace_t_pairs",
    "run_model",
]
