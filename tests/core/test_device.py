"""The one parser of device names (dvlt_core.device), used by checkpoints, backends and the node."""

from __future__ import annotations

import pytest
import torch

from dvlt_core.device import resolve_device


def test_device_names_resolve_and_auto_picks_what_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="unsupported device 'meta'"):
        resolve_device("meta")
