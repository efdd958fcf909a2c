"""``backend: da3``: Depth Anything 3 (pip ``depth-anything-3``) behind the backend interface.

DA3 is a feed-forward multi-view model: all S views go through one forward pass (its
backbone attends across views), which predicts per view a z-depth map, a confidence and a
camera (world-to-camera extrinsics and pixel intrinsics, from its camera decoder). This
backend turns that into a :class:`~dvlt_core.backends.base.BackendOutput`: the cameras are
made relative to view 0 and become rays (directions with camera-frame z = 1, origins) with
:func:`~dvlt_core.geometry.unproject.compute_world_rays`, so the pose fit, the node,
``dvlt-reconstruct`` and ``dvlt-eval`` work unchanged. DA3 has no loop: ``num_steps`` is
ignored and the forward pass is reported as one step (K = 1). Its geometry is up to scale
(``metric = False``).

What is built, and from what: only the any-view architectures of :data:`DA3_MODELS`
(``da3-small``, ``-base``, ``-large``, ``-giant``; the facts of the package's own configs,
written here), chosen by the ``model_name`` that a checkpoint's ``config.json`` carries. The
network's parts are constructed directly from the package's model classes; the package's
config machinery (which imports classes named in a config and registers an OmegaConf
``eval`` resolver) is never used on anything a checkpoint supplies, and that resolver is
removed again after the import. Weights: ``model.safetensors`` of a local folder, a file, an
https URL or a Hub id (e.g. ``depth-anything/DA3-SMALL``), resolved by
:func:`dvlt_core.io.checkpoint.resolve_checkpoint` (checked downloads, safetensors only) and
loaded with ``strict=True`` (the Gaussian-splatting head of ``da3-giant`` is not used: its
keys are dropped).

Installing: the package's own requirements pin ``numpy<2`` and pull xformers, open3d,
pycolmap and more, none of which the model code needs; install the ``da3`` extra (the
model's imports: einops, omegaconf, addict) and the package without its requirements:
``pip install 'dvlt_ros[da3]' && pip install --no-deps depth-anything-3``.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from dvlt_core.backends.base import (
    BackendOutput,
    InferenceBackend,
    StageTimings,
    check_one_scene,
    device_clock,
    register_backend,
)
from dvlt_core.device import resolve_device
from dvlt_core.geometry.transforms import pose_encoding_from_cameras
from dvlt_core.geometry.unproject import compute_world_rays
from dvlt_core.io.checkpoint import (
    CheckpointError,
    check_state_dict,
    read_state_dict,
    resolve_checkpoint,
)
from dvlt_core.model import PRECISIONS, autocast_for

INSTALL_HINT = (
    "pip install 'dvlt_ros[da3]' && pip install --no-deps depth-anything-3 (without its "
    "requirements: they pin numpy<2 and pull xformers and open3d, which the model does not need)"
)
#: ImageNet statistics the DA3 backbone (DINOv2) was trained with.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
#: The longer image side DA3 processes by default.
DA3_IMG_SIZE = 504
#: State-dict prefixes of the Gaussian-splatting head (``da3-giant``), which is not built.
UNUSED_PREFIXES = ("gs_head.", "gs_adapter.")


class Da3UnavailableError(RuntimeError):
    """The ``da3`` backend was asked for but the depth-anything-3 package is not importable."""


@dataclass(frozen=True)
class Da3Architecture:
    """One DA3 any-view network: its DINOv2 backbone (``backbone`` vits/vitb/vitl/vitg, the
    blocks whose features the heads read, where cross-view attention, QK-norm and RoPE
    start), the dual DPT head and the camera encoder/decoder widths."""

    backbone: str
    out_layers: tuple[int, int, int, int]
    cross_view_start: int
    head_dim: int
    head_features: int
    head_channels: tuple[int, int, int, int]
    camera_dim: int


#: The any-view models of depth-anything-3 0.1.1 (``configs/da3-*.yaml``), by ``model_name``.
DA3_MODELS: dict[str, Da3Architecture] = {
    "da3-small": Da3Architecture("vits", (5, 7, 9, 11), 4, 768, 64, (48, 96, 192, 384), 384),
    "da3-base": Da3Architecture("vitb", (5, 7, 9, 11), 4, 1536, 128, (96, 192, 384, 768), 768),
    "da3-large": Da3Architecture("vitl", (11, 15, 19, 23), 8, 2048, 256,
                                 (256, 512, 1024, 1024), 1024),
    "da3-giant": Da3Architecture("vitg", (19, 27, 33, 39), 13, 3072, 256,
                                 (256, 512, 1024, 1024), 1536),
}


def import_da3() -> SimpleNamespace:
    """The package's model classes, or :class:`Da3UnavailableError` saying what to install.

    Its config module registers an OmegaConf ``eval`` resolver when imported (a config
    string could then run code); it is removed again here."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="register_new_resolver")  # omegaconf 2.4
            warnings.filterwarnings("ignore", message=".*torch.jit.script")  # its layers
            from depth_anything_3.model.cam_dec import CameraDec
            from depth_anything_3.model.cam_enc import CameraEnc
            from depth_anything_3.model.da3 import DepthAnything3Net
            from depth_anything_3.model.dinov2.dinov2 import DinoV2
            from depth_anything_3.model.dualdpt import DualDPT
            from depth_anything_3.utils.logger import LOG_LEVELS, logger
            from omegaconf import OmegaConf
    except ImportError as exc:
        raise Da3UnavailableError(
            f"backend 'da3' needs the Depth Anything 3 package, which cannot be imported "
            f"({exc}): {INSTALL_HINT}"
        ) from exc
    if OmegaConf.has_resolver("eval"):
        OmegaConf.clear_resolver("eval")
    if "DA3_LOG_LEVEL" not in os.environ:  # it prints every inference's INFO to stdout
        logger.level = LOG_LEVELS["WARN"]
    return SimpleNamespace(net=DepthAnything3Net, backbone=DinoV2, head=DualDPT,
                           camera_encoder=CameraEnc, camera_decoder=CameraDec)


def build_da3(model_name: str) -> torch.nn.Module:
    """The DA3 network ``model_name`` (a key of :data:`DA3_MODELS`) with random weights."""
    try:
        arch = DA3_MODELS[model_name]
    except KeyError:
        raise CheckpointError(
            f"unknown Depth Anything 3 model {model_name!r}; the da3 backend builds "
            f"{', '.join(DA3_MODELS)} (the monocular, metric and nested models are not "
            "supported)"
        ) from None
    da3 = import_da3()
    start = arch.cross_view_start
    return da3.net(
        net=da3.backbone(name=arch.backbone, out_layers=list(arch.out_layers), alt_start=start,
                         qknorm_start=start, rope_start=start, cat_token=True),
        head=da3.head(dim_in=arch.head_dim, output_dim=2, features=arch.head_features,
                      out_channels=list(arch.head_channels)),
        cam_dec=da3.camera_decoder(dim_in=arch.head_dim),
        cam_enc=da3.camera_encoder(dim_out=arch.camera_dim),
    )


def da3_model_name(config: dict[str, Any] | None, origin: str) -> str:
    """The ``model_name`` of a DA3 checkpoint's ``config.json`` (checked to be a string)."""
    name = None if config is None else config.get("model_name")
    if not isinstance(name, str):
        found = "no config.json" if config is None else "a config.json without model_name"
        raise CheckpointError(
            f"{origin} is not a Depth Anything 3 checkpoint ({found}): the da3 backend needs a "
            "folder or Hub repository (e.g. depth-anything/DA3-SMALL) with model.safetensors "
            f"and a config.json naming the model ({', '.join(DA3_MODELS)})"
        )
    return name


def load_da3(
    source: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[torch.nn.Module, str]:
    """(the DA3 network in eval mode with the checkpoint's weights, its model name)."""
    if source is None or not str(source).strip():
        raise CheckpointError(
            "the da3 backend needs a checkpoint: a folder with model.safetensors and "
            "config.json, or a Hub id such as depth-anything/DA3-SMALL"
        )
    resolved = resolve_checkpoint(source, revision=revision, cache_dir=cache_dir)
    name = da3_model_name(resolved.raw_config, resolved.origin)
    net = build_da3(name)
    state = read_state_dict(resolved.weights)
    state = {k.removeprefix("model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    check_state_dict(net, with_shared_tensors(net, state), origin=resolved.origin)
    net.load_state_dict(with_shared_tensors(net, state), strict=True)
    return net.eval(), name


def with_shared_tensors(net: torch.nn.Module, state: dict[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
    """``state`` plus the names it leaves out because they share one tensor in ``net``
    (DA3's head reuses modules; safetensors' ``save_model`` stores such a tensor once)."""
    names_by_storage: dict[int, list[str]] = {}
    for key, tensor in net.state_dict().items():
        names_by_storage.setdefault(tensor.untyped_storage().data_ptr(), []).append(key)
    filled = dict(state)
    for names in names_by_storage.values():
        stored = next((state[n] for n in names if n in state), None)
        if stored is not None:
            filled.update({n: stored for n in names if n not in state})
    return filled


class Da3Backend(InferenceBackend):
    """Runs a DA3 network (see the module docstring) on one scene of S views.

    ``precision`` "bf16"/"fp16" run its backbone under CUDA autocast (its heads switch
    autocast off themselves); reduced precision on CPU is refused, as for ``torch``."""

    name = "da3"
    metric = False

    def __init__(self, net: torch.nn.Module, model_name: str, device: str | torch.device = "cpu",
                 precision: str = "fp32", img_size: int = DA3_IMG_SIZE) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        dev = resolve_device(device)
        if dev.type == "cpu" and precision != "fp32":
            raise ValueError(
                f"precision {precision!r} needs a CUDA device; on CPU use precision='fp32'"
            )
        self._device, self.precision, self.model_name = dev, precision, model_name
        self._img_size = int(img_size)
        self.net = net.eval().to(dev)
        self._mean = torch.tensor(IMAGE_MEAN, device=dev).view(1, 1, 3, 1, 1)
        self._std = torch.tensor(IMAGE_STD, device=dev).view(1, 1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def img_size(self) -> int:
        return self._img_size

    @property
    def default_num_steps(self) -> int:
        return 1

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        """One forward pass over all views; ``num_steps`` is ignored (DA3 has no loop)."""
        check_one_scene(images)
        height, width = images.shape[-2:]
        start = device_clock(self._device)
        x = (images.to(self._device, torch.float32) - self._mean) / self._std
        t_in = device_clock(self._device)
        with autocast_for(self.precision, self._device.type):
            out = self.net(x)
        t_net = device_clock(self._device)
        depth = out["depth"][0].float().cpu()  # (S, H, W) z-depth
        confidence = out["depth_conf"][0].float().cpu()
        w2c = out["extrinsics"][0].float().cpu()  # (S, 3, 4)
        intrinsics = out["intrinsics"][0].float().cpu()  # (S, 3, 3), centre at (W/2, H/2)
        t_host = device_clock(self._device)
        bottom = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]]).expand(len(w2c), 1, 4)
        c2w = torch.linalg.inv(torch.cat([w2c, bottom], dim=1).double())
        relative = (torch.linalg.inv(c2w[0]) @ c2w).float()  # the world is view 0's camera
        rays = compute_world_rays(relative, intrinsics, height, width)
        world = rays[..., 3:] + rays[..., :3] * depth[..., None]
        pose_enc = pose_encoding_from_cameras(relative, intrinsics, (height, width))
        end = time.perf_counter()
        timings = StageTimings(
            encode_ms=0.0,
            step_ms=[(t_net - t_in) * 1e3],
            decode_ms=(end - t_host) * 1e3,
            transfer_ms=((t_in - start) + (t_host - t_net)) * 1e3,
            total_ms=(end - start) * 1e3,
        )
        return BackendOutput(
            rays=rays[None],
            depth=depth[None, ..., None],
            depth_conf=confidence.clamp_min(1.0)[None],  # the interface's range (>= 1)
            world_points=world[None],
            pose_enc=pose_enc[None],
            timings=timings,
        )


def _create_da3_backend(
    checkpoint: Any = None,
    device: str = "cpu",
    precision: str = "fp32",
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    img_size: int = DA3_IMG_SIZE,
) -> Da3Backend:
    net, name = load_da3(checkpoint, revision=revision, cache_dir=cache_dir)
    return Da3Backend(net, name, device=device, precision=precision, img_size=img_size)


register_backend("da3", _create_da3_backend)
