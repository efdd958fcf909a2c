"""Training data: the scene format and sources, view sampling, token-budget batching."""

from dvlt_core.training.data.dataset import MultiViewDataset, collate_samples
from dvlt_core.training.data.folder import (
    FolderScene,
    SceneFormatError,
    SceneWriter,
    find_folder_scenes,
)
from dvlt_core.training.data.sampler import SampleRequest, TokenBudgetBatchSampler
from dvlt_core.training.data.scannetpp import ScanNetppScene, scannetpp_scenes
from dvlt_core.training.data.scene import Frame, Scene
from dvlt_core.training.data.sources import (
    register_source,
    scenes_from_source,
    scenes_from_sources,
)
from dvlt_core.training.data.synthetic import SyntheticScene, SyntheticSpec, synthetic_scenes
from dvlt_core.training.data.views import ViewSampling, build_sample, target_hw

__all__ = [
    "FolderScene",
    "Frame",
    "MultiViewDataset",
    "SampleRequest",
    "ScanNetppScene",
    "Scene",
    "SceneFormatError",
    "SceneWriter",
    "SyntheticScene",
    "SyntheticSpec",
    "TokenBudgetBatchSampler",
    "ViewSampling",
    "build_sample",
    "collate_samples",
    "find_folder_scenes",
    "register_source",
    "scannetpp_scenes",
    "scenes_from_source",
    "scenes_from_sources",
    "synthetic_scenes",
    "target_hw",
]
