"""The optional packages behind the viewer exports (the ``viewers`` extra).

Each export imports its package through :func:`require_viewer_package`, so a missing
package is one clear error naming the flag and the install command, raised before any
work is done.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The pip distribution of each importable package of the ``viewers`` extra.
VIEWER_PACKAGES = {"trimesh": "trimesh", "rerun": "rerun-sdk", "viser": "viser"}


class ViewerPackageMissingError(ImportError):
    """An export was asked for but its package (the ``viewers`` extra) is not installed."""


def require_viewer_package(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of :data:`VIEWER_PACKAGES`) or raise
    :class:`ViewerPackageMissingError` saying that ``purpose`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ViewerPackageMissingError(
            f"{purpose} needs {VIEWER_PACKAGES[module]}, which is not installed: "
            f"pip install 'dvlt_ros[viewers]' (or pip install {VIEWER_PACKAGES[module]})"
        ) from exc
