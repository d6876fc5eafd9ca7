"""Training recipe of the ASL descriptor (``icd train-descriptor``).

Data: a folder of photos, split into train / held-out (:mod:`matcher.training.data`); every train photo has
a cached pool of views (the unedited photo + edit-chain copies). A step draws ``batch`` photos, two of their
views (a, b) and a sub-crop c of a (holding 20-60 % of it), and minimises

    InfoNCE(a, b, c; in-batch + memory-bank negatives)
    + w_asl * [exp(1 - ||f(a)|| / ||f(c)||) + same for (unedited photo, edited view with < 70 % of it)]
    + w_kd * RDCD relational distillation of (a, b) towards precomputed teacher (SSCD) embeddings, if given.

Seeded per step (resuming gives the same batches); AMP (bf16) on CUDA; checkpoints every few minutes with
resume; a tqdm progress bar; one JSON line of losses per step in ``<out>/log.jsonl``; an evaluation on the
held-out pool every ``--eval-every`` steps. The final weights are fp16 with metadata (:mod:`.weights`).
"""
from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from matcher.descriptors.infer import describe_uint8_squares
from matcher.descriptors.model import AslDescriptor
from matcher.descriptors.preprocess import normalise_batch, uint8_to_float
from matcher.descriptors.registry import DescriptorSpec, build_model, get_spec
from matcher.descriptors.weights import load_state, save_weights
from matcher.io.atomic import atomic_write_bytes
from matcher.retrieval.normalise import split_norm
from matcher.training.losses import asl_norm_loss, multi_positive_infonce, relational_kd
from matcher.training.views import ViewPool, crop_resize, sample_sub_boxes

__all__ = [
    "TrainSettings",
    "calibrate_gate",
    "evaluate_holdout",
    "export_weights",
    "fit_direction_whitening",
    "freeze_early",
    "holdout_metrics",
    "train",
    "train_step",
]


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one run (all stored in the checkpoint and the weights' metadata)."""

    model: str = "imagenet_lite0"  # registry name whose architecture is trained
    dim: int = 256
    image_size: int = 160  # training input side (px)
    batch: int = 24  # photos per step (3 views each)
    steps: int = 600
    lr: float = 3e-4  # projection/pool; the backbone gets lr * backbone_lr_mult
    backbone_lr_mult: float = 0.3
    weight_decay: float = 1e-4
    warmup: int = 20
    restart_at: int = 0  # warm restart: the warm-up + cosine schedule runs from this step to ``steps``
    tau: float = 0.05
    w_asl: float = 0.5
    w_kd: float = 1.0
    bank_size: int = 2048
    freeze_blocks: int = 2  # stem + this many first blocks stay frozen (cheaper backward, keeps low-level features)
    seed: int = 0
    eval_every: int = 100
    ckpt_minutes: float = 5.0


def freeze_early(model: AslDescriptor, n_blocks: int) -> None:
    """Freeze the stem and the first ``n_blocks`` blocks of a timm EfficientNet/MobileNet backbone, and put
    every BatchNorm in eval mode with frozen statistics (small CPU batches)."""
    bb = model.backbone
    frozen: list[nn.Module] = [m for m in (getattr(bb, "conv_stem", None), getattr(bb, "bn1", None)) if m is not None]
    blocks = getattr(bb, "blocks", None)
    if blocks is not None:
        frozen += list(blocks[:n_blocks])
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)


def _bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _draw(pool: ViewPool, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photo indices (B,), view indices a (B,), b (B,) with a != b."""
    n, v = pool.views.shape[:2]
    idx = rng.choice(n, size=min(batch, n), replace=False)
    a = rng.integers(0, v, len(idx))
    b = (a + rng.integers(1, v, len(idx))) % v
    return idx, a, b


def train_step(
    model: AslDescriptor, pool: ViewPool, teacher: np.ndarray | None, spec: DescriptorSpec, s: TrainSettings,
    step: int, bank: dict[str, torch.Tensor], device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Build the seeded batch of ``step`` and return (total loss, {name: value}); updates the memory bank."""
    rng = np.random.default_rng([s.seed, step])
    torch.manual_seed(s.seed * 100_003 + step)
    idx, va, vb = _draw(pool, rng, s.batch)
    order = np.argsort(idx)  # sorted fancy indexing is faster on a memory map
    idx, va, vb = idx[order], va[order], vb[order]
    views = np.asarray(pool.views[idx])  # (B, V, S, S, 3)
    bsz = len(idx)
    xa = uint8_to_float(torch.from_numpy(views[np.arange(bsz), va]))
    xb = uint8_to_float(torch.from_numpy(views[np.arange(bsz), vb]))
    xc = crop_resize(xa, sample_sub_boxes(rng, bsz), s.image_size)
    flip = torch.from_numpy(rng.random(bsz) < 0.5)
    xc[flip] = xc[flip].flip(-1)
    if xa.shape[-1] != s.image_size:
        xa = F.interpolate(xa, size=(s.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        xb = F.interpolate(xb, size=(s.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
    x = normalise_batch(torch.cat([xa, xb, xc]), spec.mean, spec.std).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        f = model(x).float()
    fa, fb, fc = f[:bsz], f[bsz:2 * bsz], f[2 * bsz:]
    z = F.normalize(f, dim=1)
    labels = torch.from_numpy(np.tile(idx, 3)).to(device)
    l_nce = multi_positive_infonce(z, labels, s.tau, bank.get("z"), bank.get("labels"))
    # ASL: the view holds more than its own sub-crop; the unedited photo more than a cropped edit of it
    vis_a = torch.from_numpy(pool.visible[idx, va]).to(device)
    vis_b = torch.from_numpy(pool.visible[idx, vb]).to(device)
    comp_a = torch.from_numpy(pool.composite[idx, va]).to(device)
    comp_b = torch.from_numpy(pool.composite[idx, vb]).to(device)
    a_more = (torch.from_numpy(va == 0).to(device)) & (vis_b < 0.7) & ~comp_b
    b_more = (torch.from_numpy(vb == 0).to(device)) & (vis_a < 0.7) & ~comp_a
    more = torch.cat([fa, fa[a_more], fb[b_more]])
    less = torch.cat([fc, fb[a_more], fa[b_more]])
    l_asl = asl_norm_loss(more, less)
    loss = l_nce + s.w_asl * l_asl
    parts = {"nce": float(l_nce.detach()), "asl": float(l_asl.detach())}
    if teacher is not None and s.w_kd > 0:
        t = np.concatenate([teacher[idx, va], teacher[idx, vb]]).astype(np.float32)
        zt = F.normalize(torch.from_numpy(t).to(device), dim=1)
        l_kd = relational_kd(z[:2 * bsz], zt, s.tau, s.tau)
        loss = loss + s.w_kd * l_kd
        parts["kd"] = float(l_kd.detach())
    with torch.no_grad():
        parts["norm_ratio"] = float((fa.norm(dim=1) / fc.norm(dim=1)).mean())
        parts["pos_cos"] = float((z[:bsz] * z[bsz:2 * bsz]).sum(1).mean())
        if s.bank_size > 0:
            nz = torch.cat([z[:bsz].detach(), bank["z"]])[: s.bank_size] if "z" in bank else z[:bsz].detach()
            nl = torch.cat([labels[:bsz], bank["labels"]])[: s.bank_size] if "labels" in bank else labels[:bsz]
            bank["z"], bank["labels"] = nz, nl
    parts["loss"] = float(loss.detach())
    return loss, parts


def holdout_metrics(fr: np.ndarray, fq: np.ndarray) -> dict[str, float]:
    """Metrics of reference descriptors fr (R, D) and query descriptors fq (N, D), N >= R, where query i < R
    copies reference i and the rest copy nothing: cosine top-10 per query -> µAP, recall@P90, recall@1
    (matcher.isc.metrics), plus the fraction of true pairs with ||f(q)|| > ||f(r)||."""
    from matcher.isc.metrics import evaluate
    from matcher.isc.submission import GroundTruthMatch, PredictedMatch

    n, n_refs = fq.shape[0], fr.shape[0]
    zr, nr = split_norm(fr)
    zq, nq = split_norm(fq)
    sim = zq @ zr.T
    top = np.argsort(-sim, axis=1)[:, :10]
    preds = [PredictedMatch(f"q{i}", f"r{j}", float(sim[i, j])) for i in range(n) for j in top[i]]
    gt = [GroundTruthMatch(f"q{i}", f"r{i}" if i < n_refs else "") for i in range(n)]
    m = evaluate(preds, gt)
    above = float(np.mean(nq[:n_refs] > nr)) if n_refs else float("nan")
    return {"uap": m.micro_ap, "recall_p90": m.recall_at_p90, "r_at_1": m.recall_at_rank1,
            "true_pairs_q_norm_above_r": above}


def _describe_holdout(model: AslDescriptor, pool: ViewPool, spec: DescriptorSpec, image_size: int,
                      n_refs: int | None) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    n = pool.views.shape[0]
    n_refs = n_refs if n_refs is not None else (3 * n) // 4
    fr = describe_uint8_squares(model, np.asarray(pool.views[:n_refs, 0]), image_size, spec.mean, spec.std)
    fq = describe_uint8_squares(model, np.asarray(pool.views[:, 1]), image_size, spec.mean, spec.std)
    model.train(was_training)
    _bn_eval(model)
    return fr, fq


def evaluate_holdout(model: AslDescriptor, pool: ViewPool, spec: DescriptorSpec, image_size: int,
                     n_refs: int | None = None) -> dict[str, float]:
    """Held-out retrieval check: references = unedited photos of the first ``n_refs`` (default 3/4) photos,
    queries = their edited view 1 and those of the rest (distractors); see :func:`holdout_metrics`."""
    return holdout_metrics(*_describe_holdout(model, pool, spec, image_size, n_refs))


def fit_direction_whitening(
    model: AslDescriptor, pool: ViewPool, holdout: ViewPool, spec: DescriptorSpec, image_size: int, *,
    n_photos: int = 1500, shrinks: tuple[float, ...] = (float("inf"), 1.0, 0.3, 0.1, 0.03, 0.01),
) -> dict[str, Any]:
    """Learn the model's direction whitening (:class:`~matcher.descriptors.model.Whitening`) from the unedited
    and first edited views of up to ``n_photos`` train photos, choosing the shrinkage by held-out µAP
    (inf = centring only; "none" is kept when nothing beats it). Sets the model's buffers; returns the choice."""
    from matcher.descriptors.model import fit_whitening

    model.whiten.enabled.fill_(0.0)
    model.eval()
    m = min(n_photos, pool.views.shape[0])
    f_train = np.concatenate([
        describe_uint8_squares(model, np.asarray(pool.views[:m, j]), image_size, spec.mean, spec.std)
        for j in (0, 1)])
    fr, fq = _describe_holdout(model, holdout, spec, image_size, None)
    results = {"none": holdout_metrics(fr, fq)["uap"]}
    best, best_uap, best_wp = "none", results["none"], None
    for sh in shrinks:
        mean, proj = fit_whitening(torch.from_numpy(f_train), sh)
        w = model.whiten
        w.mean.copy_(mean)
        w.proj.copy_(proj)
        w.enabled.fill_(1.0)
        with torch.no_grad():
            g = w(torch.from_numpy(fr)).numpy(), w(torch.from_numpy(fq)).numpy()
        uap = holdout_metrics(*g)["uap"]
        results[str(sh)] = uap
        if uap > best_uap:
            best, best_uap, best_wp = str(sh), uap, (mean, proj)
    if best_wp is None:
        model.whiten.enabled.fill_(0.0)
    else:
        model.whiten.mean.copy_(best_wp[0])
        model.whiten.proj.copy_(best_wp[1])
        model.whiten.enabled.fill_(1.0)
    return {"whitening": best, "whitening_holdout_uap": json.dumps(results), "whitening_n_train": int(f_train.shape[0])}


def calibrate_gate(model: AslDescriptor, pool: ViewPool, spec: DescriptorSpec, image_size: int, *, seed: int = 0,
                   max_false_reject: float = 0.05) -> dict[str, float]:
    """Learn the ASL gate margin on a held-out pool: log-norm ratios of true copies (edited view 1 -> unedited
    photo) and of holistic-vs-crop negatives (unedited photo -> its own 20-50 % crop). The margin marks at most
    ``max_false_reject`` of the copies; returns it with the marked fractions of both."""
    from matcher.retrieval.gate import fit_margin, log_norm_ratio

    model.eval()
    orig = np.asarray(pool.views[:, 0])
    f_orig = describe_uint8_squares(model, orig, image_size, spec.mean, spec.std)
    f_edit = describe_uint8_squares(model, np.asarray(pool.views[:, 1]), image_size, spec.mean, spec.std)
    boxes = sample_sub_boxes(np.random.default_rng([seed, 99]), orig.shape[0], (0.2, 0.5))
    crops = crop_resize(uint8_to_float(torch.from_numpy(orig)), boxes, image_size)
    crops_u8 = (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    f_crop = describe_uint8_squares(model, crops_u8, image_size, spec.mean, spec.std)
    n_orig, n_edit, n_crop = (split_norm(f)[1] for f in (f_orig, f_edit, f_crop))
    copies = log_norm_ratio(n_edit, n_orig[:, None])[:, 0]
    holistic = log_norm_ratio(n_orig, n_crop[:, None])[:, 0]
    margin = fit_margin(copies, holistic, max_false_reject)
    return {"gate_margin": margin, "copies_marked": float(np.mean(copies > margin)),
            "holistic_marked": float(np.mean(holistic > margin)), "n_pairs": int(orig.shape[0])}


def export_weights(checkpoint: str | Path, out: str | Path, holdout: ViewPool | None = None,
                   extra_meta: dict[str, Any] | None = None, pool: ViewPool | None = None) -> dict[str, Any]:
    """Write fp16 weights from a training checkpoint, with metadata; with ``holdout``: the gate margin is
    calibrated on it, and with ``pool`` (train views) too, the direction whitening is learned first.
    Returns the metadata (with the file's sha256)."""
    st = torch.load(checkpoint, map_location="cpu", weights_only=True)
    s = TrainSettings(**st["settings"])
    spec = get_spec(s.model, dim=s.dim, image_size=s.image_size)
    model = build_model(spec, imagenet=False, seed=s.seed)
    load_state(model, st["model"], str(checkpoint))
    history = json.loads(st["history"])
    meta: dict[str, Any] = {"arch": spec.arch, "dim": spec.dim, "image_size": spec.image_size, "steps": int(st["step"]),
                            "wall_s": round(float(history.get("wall_s", 0.0)), 1), "settings": json.dumps(s.__dict__),
                            "evals": json.dumps(history.get("evals", []))}
    if holdout is not None and pool is not None:
        meta.update(fit_direction_whitening(model, pool, holdout, spec, s.image_size))
    if holdout is not None:
        meta.update(calibrate_gate(model, holdout, spec, s.image_size, seed=s.seed))
        meta["holdout_final"] = json.dumps(evaluate_holdout(model, holdout, spec, s.image_size))
    meta.update(extra_meta or {})
    meta["sha256"] = save_weights(out, model, meta)
    return meta


def _ckpt_bytes(model: nn.Module, opt: torch.optim.Optimizer, step: int, bank: dict[str, torch.Tensor],
                settings: TrainSettings, history: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "bank": {k: v.cpu() for k, v in bank.items()}, "settings": settings.__dict__,
                "history": json.dumps(history)}, buf)
    return buf.getvalue()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after ``step`` (written after the checkpoint that is being resumed)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("step", rec.get("eval", {}).get("step", 0)) <= step:
            keep.append(line)
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def _optimizer(model: AslDescriptor, s: TrainSettings) -> torch.optim.Optimizer:
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    body = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    return torch.optim.AdamW([{"params": head, "lr": s.lr, "base": s.lr},
                              {"params": body, "lr": s.lr * s.backbone_lr_mult, "base": s.lr * s.backbone_lr_mult}],
                             weight_decay=s.weight_decay)


def train(
    pool: ViewPool, holdout: ViewPool | None, out: Path, s: TrainSettings, *, teacher: np.ndarray | None = None,
    resume: bool = True, device: str = "cpu", progress: bool = True, max_seconds: float = 0.0,
    extra_meta: dict[str, Any] | None = None, init: str | Path | None = None, start_step: int = 0,
) -> dict[str, Any]:
    """Run (or resume from ``out/checkpoint.pt``) training; writes ``out/log.jsonl``, checkpoints and
    ``out/<model>_<dim>.pt`` (final fp16 weights). ``max_seconds`` > 0 stops early after a checkpoint
    (resume later). ``init``: a descriptor weights file to start from instead of ImageNet (a new run only; its
    direction whitening is switched off and refitted at export); with ``start_step``, a new run from ``init``
    continues the schedule and the seeded batches at that step (to carry a run on from exported weights when its
    full checkpoint is gone: the optimiser's moments start afresh). Returns the history (per-eval metrics, wall
    time, steps done)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    spec = get_spec(s.model, dim=s.dim, image_size=s.image_size)
    model = build_model(spec, imagenet=init is None, seed=s.seed).to(dev)
    step = 0
    if init is not None and not (resume and (out / "checkpoint.pt").is_file()):
        from matcher.descriptors.weights import read_weights

        state, meta = read_weights(init)
        if int(meta.get("dim", s.dim)) != s.dim:
            raise ValueError(f"{init}: {meta.get('dim')}-d weights, this run trains {s.dim}-d descriptors")
        load_state(model, state, str(init))
        model.whiten.enabled.zero_()  # trained without whitening; export fits it again
        step = max(0, int(start_step))
    freeze_early(model, s.freeze_blocks)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[assignment]
    opt = _optimizer(model, s)
    bank: dict[str, torch.Tensor] = {}
    history: dict[str, Any] = {"evals": [], "wall_s": 0.0}
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.is_file():
        st = torch.load(ckpt, map_location=dev, weights_only=True)
        load_state(model, st["model"], str(ckpt))
        opt.load_state_dict(st["opt"])
        for g, base in zip(opt.param_groups, (s.lr, s.lr * s.backbone_lr_mult)):
            g["base"] = base  # the schedule follows this run's settings, not the checkpoint's
        bank = {k: v.to(dev) for k, v in st["bank"].items()}
        step = int(st["step"])
        history = json.loads(st["history"])
        print(f"resumed at step {step}", file=sys.stderr, flush=True)
        _truncate_log(out / "log.jsonl", step)
    model.train()
    _bn_eval(model)
    t_start, t_ckpt = time.time(), time.time()
    wall0 = float(history.get("wall_s", 0.0))
    bar = tqdm(total=s.steps, initial=step, disable=not progress, mininterval=20, file=sys.stderr, dynamic_ncols=False)
    with open(out / "log.jsonl", "a", encoding="utf-8") as log:
        while step < s.steps:
            fac = _lr_factor(step - s.restart_at, s.steps - s.restart_at, s.warmup)
            for g in opt.param_groups:
                g["lr"] = g["base"] * fac
            loss, parts = train_step(model, pool, teacher, spec, s, step, bank, dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 5.0)
            opt.step()
            step += 1
            history["wall_s"] = wall0 + time.time() - t_start
            log.write(json.dumps({"step": step, "lr": opt.param_groups[0]["lr"], "wall_s": round(history["wall_s"], 1),
                                  **{k: round(v, 5) for k, v in parts.items()}}) + "\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}", nce=f"{parts['nce']:.3f}", asl=f"{parts['asl']:.3f}")
            if holdout is not None and s.eval_every > 0 and (step % s.eval_every == 0 or step == s.steps):
                ev = {"step": step, **evaluate_holdout(model, holdout, spec, s.image_size)}
                history["evals"].append(ev)
                log.write(json.dumps({"eval": ev}) + "\n")
                log.flush()
                print(f"eval {ev}", file=sys.stderr, flush=True)
            stop = max_seconds > 0 and time.time() - t_start > max_seconds
            if time.time() - t_ckpt > s.ckpt_minutes * 60 or step == s.steps or stop:
                history["wall_s"] = wall0 + time.time() - t_start
                atomic_write_bytes(ckpt, _ckpt_bytes(model, opt, step, bank, s, history))
                t_ckpt = time.time()
            if stop:
                break
    bar.close()
    history["steps_done"] = step
    if step >= s.steps:
        meta = {"arch": spec.arch, "dim": spec.dim, "image_size": spec.image_size, "steps": step,
                "wall_s": round(history["wall_s"], 1), "settings": json.dumps(s.__dict__),
                "evals": json.dumps(history["evals"]), **(extra_meta or {})}
        if holdout is not None:
            meta.update(fit_direction_whitening(model, pool, holdout, spec, s.image_size))
            meta.update(calibrate_gate(model, holdout, spec, s.image_size, seed=s.seed))
        history["weights"] = str(out / f"asl_{spec.arch.replace('efficientnet_', '')}_{spec.dim}.pt")
        history["sha256"] = save_weights(history["weights"], model, meta)
        history["gate"] = {k: meta[k] for k in ("gate_margin", "copies_marked", "holistic_marked") if k in meta}
    return history
