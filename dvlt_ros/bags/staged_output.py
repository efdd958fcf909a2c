"""How `dvlt-ros process` output lands on disk.

* :class:`StagedOutput`: everything is written into a hidden sibling directory that is
  renamed to the requested name at the end (one atomic ``rename``), so the output
  directory either does not exist or holds a finished, readable set of files, also after
  an interruption (then the summary says what was kept).

The fused cloud and the trajectories it writes are the session's
(:mod:`dvlt_ros.pipeline.accumulate`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dvlt_ros.bags.issues import BagError


class StagedOutput:
    """An output directory written under a temporary name (see the module docstring)."""

    def __init__(self, out_dir: str | Path, overwrite: bool = False) -> None:
        self.final = Path(out_dir).absolute()
        if self.final.exists() and not self.final.is_dir():
            raise BagError(f"--out {self.final} exists and is not a directory")
        if self.final.is_dir() and any(self.final.iterdir()) and not overwrite:
            raise BagError(f"--out {self.final} already holds files: choose a new directory "
                           "or pass --overwrite to replace it")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir()

    def path(self, name: str) -> Path:
        """Where to write file ``name`` now (inside the staging directory)."""
        return self.staging / name

    def commit(self) -> Path:
        """Move the staged files into place (replacing an old output) and return it."""
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
            os.rename(self.final, old)
        os.rename(self.staging, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        """Remove the staging directory (nothing worth keeping was written)."""
        shutil.rmtree(self.staging, ignore_errors=True)
