"""Relative-pose metrics of the benchmark protocol: rotation/translation errors, Racc, Tacc, AUC."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _as_4x4(poses: Tensor) -> Tensor:
    if poses.shape[-2:] == (4, 4):
        return poses
    bottom = torch.zeros(*poses.shape[:-2], 1, 4, dtype=poses.dtype, device=poses.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([poses, bottom], dim=-2)


def _rigid_inverse(poses: Tensor) -> Tensor:
    """Inverse of rigid (S, 4, 4) transforms via ``[Rᵀ | −Rᵀt]``."""
    rot_t = poses[..., :3, :3].transpose(-2, -1)
    trans = -rot_t @ poses[..., :3, 3:4]
    return torch.cat([torch.cat([rot_t, trans], dim=-1), poses[..., 3:4, :]], dim=-2)


def pair_indices(num_frames: int) -> tuple[Tensor, Tensor]:
    """All pairs ``i < j`` in lexicographic (``torch.combinations``) order."""
    pairs = torch.combinations(torch.arange(num_frames), 2, with_replacement=False)
    return pairs[:, 0], pairs[:, 1]


def relative_pose_errors(pred_c2w: Tensor, gt_c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pair relative rotation and translation-direction errors in degrees.

    For every pair ``i < j`` the relative pose is ``inv(T_j)·T_i`` (rigid inverse), for GT and
    prediction alike. The rotation error is the geodesic angle between the two relative rotations.
    The translation error is the angle θ between the two relative translations, folded to
    ``min(θ, |180° − θ|)``, so it is blind to the translation's sign and scale.

    Args:
        pred_c2w: (S, 4, 4) or (S, 3, 4) predicted camera-to-world poses, S ≥ 2.
        gt_c2w: GT poses, (S, 4, 4) or (S, 3, 4).

    Returns:
        ``(rot_err_deg, trans_err_deg)``, each of shape (S·(S−1)/2,).
    """
    for poses in (pred_c2w, gt_c2w):
        if poses.ndim != 3 or poses.shape[-2:] not in ((4, 4), (3, 4)):
            raise ValueError(f"expected one sequence of poses (S, 4, 4) or (S, 3, 4), got "
                             f"{tuple(poses.shape)}; evaluate batched sequences one at a time")
    if pred_c2w.shape[0] != gt_c2w.shape[0]:
        raise ValueError(f"{pred_c2w.shape[0]} predicted poses but {gt_c2w.shape[0]} GT poses")
    if pred_c2w.shape[0] < 2:
        raise ValueError("relative pose metrics need at least 2 frames")
    pred, gt = _as_4x4(pred_c2w), _as_4x4(gt_c2w)
    first, second = pair_indices(pred.shape[0])
    first, second = first.to(pred.device), second.to(pred.device)
    rel_gt = _rigid_inverse(gt[second]) @ gt[first]
    rel_pred = _rigid_inverse(pred[second]) @ pred[first]

    trace = torch.einsum("...ii", rel_gt[:, :3, :3].transpose(-2, -1) @ rel_pred[:, :3, :3])
    cos_r = torch.clip((trace - 1) / 2, -1.0, 1.0)
    rot_err = torch.rad2deg(torch.arccos(cos_r).abs())

    t_gt, t_pred = rel_gt[:, :3, 3], rel_pred[:, :3, 3]
    eps = 1e-15
    cos_t = (t_gt * t_pred).sum(-1) / (
        t_gt.norm(dim=-1).clamp(min=eps) * t_pred.norm(dim=-1).clamp(min=eps)
    )
    theta = torch.rad2deg(torch.acos(torch.clamp(cos_t, -1.0, 1.0)))
    trans_err = torch.minimum(theta, (180 - theta).abs())
    return rot_err, trans_err


def pose_auc(rot_err: Tensor, trans_err: Tensor, threshold: int) -> Tensor:
    """Area under the accuracy curve of ``max(rot_err, trans_err)`` up to ``threshold`` degrees.

    Matches the upstream definition exactly: a histogram with ``threshold + 1`` equal bins over
    ``[0, threshold]`` (bin width ``T/(T+1)``, not 1°; errors above T are dropped, an error equal
    to T lands in the last bin), normalised by the number of pairs, cumulated, then averaged over
    the bins.
    """
    errors = torch.maximum(rot_err, trans_err)
    hist = torch.histc(errors, bins=int(threshold) + 1, min=0, max=threshold)
    return torch.cumsum(hist / float(errors.numel()), dim=0).mean()


def compute_pose_metrics(
    pred_c2w: Tensor, gt_c2w: Tensor, thresholds: Sequence[int] = (1, 3, 5, 20, 30)
) -> dict[str, Tensor]:
    """Pose metrics of one sequence, invariant to a global similarity of either trajectory.

    Computed in float64 (inputs are cast). Returns 0-d tensors ``R_error``, ``T_error`` (mean
    pair errors in degrees) and, per threshold T, ``Racc_T`` / ``Tacc_T`` (fraction of pairs with
    error < T; float32 means, as upstream) and ``Auc_T`` (:func:`pose_auc`).
    """
    rot_err, trans_err = relative_pose_errors(pred_c2w.to(torch.float64), gt_c2w.to(torch.float64))
    metrics = {"R_error": rot_err.mean(), "T_error": trans_err.mean()}
    for thr in thresholds:
        metrics[f"Racc_{thr}"] = (rot_err < thr).float().mean()
        metrics[f"Tacc_{thr}"] = (trans_err < thr).float().mean()
        metrics[f"Auc_{thr}"] = pose_auc(rot_err, trans_err, thr)
    return metrics
