"""Per-exit losses (OSTrack's: focal on the centre heatmap + 5 L1 + 2 GIoU on the box) and the
target-aware self-distillation of early exits towards the deepest layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from fusionweave.trainers.dytrack.config import LossConfig
from fusionweave.trainers.dytrack.model import ExitOutput


def heatmap_target(box: torch.Tensor, grid: int, sigma: float) -> torch.Tensor:
    """(B, 1, G, G) Gaussians at each box centre's cell, peak 1."""
    c = (box[:, :2] * grid).clamp(0, grid - 1e-4)
    ys = torch.arange(grid, device=box.device).float() + 0.5
    d2 = (ys[None, None, :] - c[:, 0, None, None]) ** 2 + (ys[None, :, None] - c[:, 1, None, None]) ** 2
    heat = torch.exp(-d2 / (2 * sigma ** 2))
    # the centre's own cell is exactly 1 (the focal loss's positive)
    idx = c.long()
    heat[torch.arange(len(box)), idx[:, 1], idx[:, 0]] = 1.0
    return heat[:, None]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CornerNet's penalty-reduced focal loss, normalised by the positives."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = torch.log(1 - p) * p ** alpha * (1 - target) ** beta * neg
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)


def box_at_target(out: ExitOutput, box: torch.Tensor) -> torch.Tensor:
    """The exit's box read at the ground-truth centre cell (OSTrack supervises size and offset
    there, not at the predicted peak)."""
    g = out.maps["heat"].shape[-1]
    c = (box[:, :2] * g).clamp(0, g - 1e-4)
    ix, iy = c[:, 0].long(), c[:, 1].long()
    n = torch.arange(len(box), device=box.device)
    off = out.maps["offset"][n, :, iy, ix]
    size = out.maps["size"][n, :, iy, ix]
    return torch.stack([(ix.float() + off[:, 0]) / g, (iy.float() + off[:, 1]) / g, size[:, 0], size[:, 1]], 1)


def target_mask(box: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, G*G) 1 for the search tokens whose cell centre lies inside the box."""
    ys = (torch.arange(grid, device=box.device).float() + 0.5) / grid
    x1, y1, x2, y2 = xyxy(box).unbind(1)
    inx = (ys[None, :] >= x1[:, None]) & (ys[None, :] <= x2[:, None])
    iny = (ys[None, :] >= y1[:, None]) & (ys[None, :] <= y2[:, None])
    return (iny[:, :, None] & inx[:, None, :]).flatten(1).float()


def distill_loss(early: torch.Tensor, deep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of an early exit's search tokens to the deepest layer's (no gradient to the deep side)
    inside the target box."""
    err = ((early - deep.detach()) ** 2).mean(-1)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def dytrack_loss(outs: list[ExitOutput], box: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    weights = cfg.exit_weights or [1.0] * len(outs)
    g = outs[0].maps["heat"].shape[-1]
    target = heatmap_target(box, g, cfg.heat_sigma)
    mask = target_mask(box, g)
    total = box.new_zeros(())
    logs: dict[str, float] = {}
    for k, (out, w) in enumerate(zip(outs, weights)):
        pred = box_at_target(out, box)
        focal = focal_loss(out.maps["heat"], target)
        l1 = F.l1_loss(xyxy(pred), xyxy(box))
        giou = generalized_box_iou_loss(xyxy(pred), xyxy(box), reduction="mean")
        loss = cfg.focal * focal + cfg.l1 * l1 + cfg.giou * giou
        if k < len(outs) - 1 and cfg.distill > 0:
            dist = distill_loss(out.search, outs[-1].search, mask)
            loss = loss + cfg.distill * dist
            logs[f"distill_{k}"] = float(dist.detach())
        total = total + w * loss
        logs.update({f"focal_{k}": float(focal.detach()), f"l1_{k}": float(l1.detach()),
                     f"giou_{k}": float(giou.detach())})
    return total, logs
