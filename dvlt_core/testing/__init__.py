"""Test support shipped with the package: deterministic weights for parity checks."""

from dvlt_core.testing.det_weights import (
    deterministic_state_dict,
    load_deterministic_weights,
    state_dict_sha256,
)

__all__ = ["deterministic_state_dict", "load_deterministic_weights", "state_dict_sha256"]
