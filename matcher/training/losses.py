"""Training losses of the ASL descriptor.

- :func:`multi_positive_infonce`: instance discrimination over all views in a batch (views of one photo are
  positives, every other photo's views and a memory bank of past embeddings are negatives), on L2-normalised
  descriptors with temperature ``tau``.
- :func:`asl_norm_loss`: exp(1 - ||f_more|| / ||f_less||) (ASL), pushing views holding more of a picture to
  larger norms.
- :func:`relational_kd`: RDCD relational distillation: KL(teacher || student) of each anchor's softmax over
  its similarities to the other samples in the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["asl_norm_loss", "multi_positive_infonce", "relational_kd"]


def multi_positive_infonce(
    z: torch.Tensor, labels: torch.Tensor, tau: float = 0.05,
    bank: torch.Tensor | None = None, bank_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """z (N, D) L2-normalised, labels (N,) int photo ids; bank (M, D) normalised negatives with labels (M,)
    (entries sharing a label with an anchor are ignored). Mean over anchors of -mean log p(positive)."""
    n = z.shape[0]
    sim = z @ z.T / tau
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    logits = sim.masked_fill(eye, float("-inf"))
    if bank is not None and bank.shape[0] > 0:
        bsim = z @ bank.T / tau
        if bank_labels is not None:
            bsim = bsim.masked_fill(labels[:, None] == bank_labels[None, :], float("-inf"))
        logits = torch.cat([logits, bsim], 1)
        pos = torch.cat([pos, torch.zeros_like(bsim, dtype=torch.bool)], 1)
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    npos = pos.sum(1)
    keep = npos > 0
    if not bool(keep.any()):
        return z.sum() * 0.0
    per = -(logp.masked_fill(~pos, 0.0).sum(1)[keep] / npos[keep])
    return per.mean()


def asl_norm_loss(f_more: torch.Tensor, f_less: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """f_more, f_less (N, D) unnormalised descriptors of paired views, the first holding more of the picture:
    mean of exp(1 - ||f_more|| / ||f_less||) (1 when the norms are equal, -> 0 as f_more grows)."""
    if f_more.shape[0] == 0:
        return f_more.sum() * 0.0
    ratio = f_more.norm(dim=1) / f_less.norm(dim=1).clamp(min=eps)
    return torch.exp(1.0 - ratio).mean()


def relational_kd(z_student: torch.Tensor, z_teacher: torch.Tensor, tau_s: float = 0.05, tau_t: float = 0.05) -> torch.Tensor:
    """z_student (N, Ds), z_teacher (N, Dt), both L2-normalised, rows aligned: mean over anchors of
    KL(softmax(S_t / tau_t) || softmax(S_s / tau_s)) over the other N - 1 samples."""
    n = z_student.shape[0]
    if n < 2:
        return z_student.sum() * 0.0
    eye = torch.eye(n, dtype=torch.bool, device=z_student.device)
    s = (z_student @ z_student.T / tau_s).masked_fill(eye, float("-inf"))
    t = (z_teacher @ z_teacher.T / tau_t).masked_fill(eye, float("-inf"))
    log_ps = F.log_softmax(s, 1).masked_fill(eye, 0.0)
    pt = F.softmax(t, 1)
    log_pt = F.log_softmax(t, 1).masked_fill(eye, 0.0)
    return (pt * (log_pt - log_ps)).sum(1).mean()
