"""Train the pasted-picture detector with ultralytics, offline, pickle-free, inside one output folder.

``train_detector(data_yaml, out_dir, ...)`` builds YOLO from its yaml (no pretrained download) and trains it on
the synthetic set of :mod:`detectors.synth`. Everything goes under ``out_dir``::

    ultralytics-config/        ultralytics' settings (YOLO_CONFIG_DIR), see detectors.offline
    runs/<name>/args.yaml      the run's arguments; results.csv: per-epoch losses and val mAP
    runs/<name>/weights/last_state.pt, best_state.pt   our checkpoints (tensors and plain data only)
    train_log.txt              one line per epoch (also printed)
    detector_yolov8n.pt/.json  the final weights (best EMA, fp16) in the format of detectors.model

Ultralytics' own checkpoints (last.pt/best.pt) and label caches (*.cache) are pickles, so the trainer here
writes neither: checkpoints hold only state dicts (``torch.load(weights_only=True)``), labels are re-scanned
on each start (a few seconds). ``resume=True`` continues from ``last_state.pt`` (model, EMA, optimizer,
epoch, best fitness) with the arguments stored in ``train_config.json``.

Recipe choices: ``mosaic=0`` (ultralytics' 4-image mosaic would show unlabelled picture tiles, contradicting
the labelled mosaic layout), ``amp=False`` (the AMP check downloads a model), ``plots=False``.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from detectors.model import DetectorMeta, save_detector
from detectors.offline import prepare_ultralytics
from matcher.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["TrainConfig", "TrainResult", "build_training_model", "train_detector"]


def build_training_model(yaml: str = "yolov8n.yaml", nc: int = 1) -> torch.nn.Module:
    """A randomly initialised ultralytics ``DetectionModel`` from ``yaml`` with ``nc`` classes (CPU, eval mode),
    for training; ultralytics is prepared (offline, contained: :mod:`detectors.offline`) and imported here. Its
    state dict is the layout :func:`detectors.network.build_network` loads for inference."""
    prepare_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(yaml, ch=3, nc=int(nc), verbose=False).eval()


@dataclass
class TrainConfig:
    """Arguments of one training run (stored as ``train_config.json`` for resume)."""

    data: str
    yaml: str = "yolov8n.yaml"
    epochs: int = 30
    imgsz: int = 320
    batch: int = 16
    device: str = "cpu"  # "cpu", "0" (first GPU), ...
    workers: int = 0
    seed: int = 0
    patience: int = 100
    name: str = "train"
    lr0: float = 0.01
    fraction: float = 1.0  # share of the training images used (quick runs)
    hours: float = 0.0  # wall-time budget: > 0 lets ultralytics re-fit the epoch count to it after each epoch
    warmup_epochs: float = 1.0
    init: str = ""  # start from these weights (detectors.model format) instead of random initialisation
    overrides: dict[str, Any] | None = None  # extra ultralytics train arguments


@dataclass
class TrainResult:
    """Outcome of :func:`train_detector`."""

    weights: str
    epochs_done: int
    wall_seconds: float
    map50: float
    map50_95: float
    run_dir: str


def _state_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _safe_trainer_class() -> type:
    """A DetectionTrainer that checkpoints state dicts only and never unpickles (built lazily: needs the
    offline environment before ultralytics is imported)."""
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import unwrap_model

    class SafeDetectionTrainer(DetectionTrainer):
        log_file: Path | None = None

        def check_resume(self, overrides: dict) -> None:  # resume from our own state file, not last.pt
            self.resume = bool(self.args.resume)

        def _last_state(self) -> Path:
            return self.wdir / "last_state.pt"

        def _best_state(self) -> Path:
            return self.wdir / "best_state.pt"

        init_weights: str = ""

        def setup_model(self):  # type: ignore[override]
            super().setup_model()
            if not self.resume:
                if self.init_weights:
                    from detectors.model import load_state_dict

                    self.model.load_state_dict(load_state_dict(self.init_weights, self.model))
                    self._log(f"initialised from {self.init_weights}")
                return None
            path = self._last_state()
            if not path.is_file():
                raise FileNotFoundError(f"cannot resume: no checkpoint '{path}'")
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            return state

        def resume_training(self, ckpt) -> None:  # type: ignore[override]
            if not ckpt or not self.resume:
                return
            start = int(ckpt["epoch"]) + 1
            if start >= self.epochs:
                raise ValueError(f"training to {self.epochs} epochs is finished ({start} done); nothing to resume")
            for saved, group in zip(ckpt["optimizer"]["param_groups"], self.optimizer.param_groups):
                saved["fused"] = group.get("fused")
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.ema.ema.load_state_dict(ckpt["ema"])
            self.ema.updates = int(ckpt["updates"])
            bf = ckpt.get("best_fitness")
            self.best_fitness = None if bf is None else float(bf)
            self.stopper.best_fitness = self.best_fitness
            self.stopper.best_epoch = int(ckpt.get("best_epoch", 0))
            self.start_epoch = start
            self._log(f"resuming at epoch {start + 1}/{self.epochs} from {self._last_state()}")

        def save_model(self) -> bool:  # type: ignore[override]
            best = self.best_fitness is not None and self.fitness is not None and self.fitness >= self.best_fitness
            ema = _cpu_state(self.ema.ema)
            state = {"epoch": int(self.epoch), "model": _cpu_state(unwrap_model(self.model)), "ema": ema,
                     "optimizer": self.optimizer.state_dict(), "updates": int(self.ema.updates),
                     "best_fitness": None if self.best_fitness is None else float(self.best_fitness),
                     "best_epoch": int(self.stopper.best_epoch)}
            atomic_write_bytes(self._last_state(), _state_bytes(state))
            if best or not self._best_state().exists():
                atomic_write_bytes(self._best_state(), _state_bytes({"epoch": int(self.epoch), "ema": ema}))
            return False  # no on_model_save callbacks (nothing of ultralytics' own format was written)

        def final_eval(self) -> None:  # type: ignore[override]
            path = self._best_state()
            if not path.is_file():
                return
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.ema.ema.load_state_dict(state["ema"])
            self.metrics = self.validator(self)
            self.metrics.pop("fitness", None)
            self._log(f"best epoch {int(state['epoch']) + 1}: " + _fmt_metrics(self.metrics))

        def _log(self, line: str) -> None:
            print(line, flush=True)
            if self.log_file is not None:
                with open(self.log_file, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")

    return SafeDetectionTrainer


def _fmt_metrics(m: dict[str, Any] | None) -> str:
    m = m or {}
    return (f"P {m.get('metrics/precision(B)', 0):.3f} R {m.get('metrics/recall(B)', 0):.3f} "
            f"mAP50 {m.get('metrics/mAP50(B)', 0):.4f} mAP50-95 {m.get('metrics/mAP50-95(B)', 0):.4f}")


def _no_cache_files() -> None:
    """Stop ultralytics from writing/reading pickled ``*.cache`` label files (labels are re-scanned)."""
    import ultralytics.data.dataset as ds

    def _load(path: Any) -> dict:
        raise FileNotFoundError("label caches are disabled (they are pickles)")

    def _save(prefix: str, path: Any, x: dict, version: str) -> None:
        x["version"] = version  # what the real function adds in place before writing; nothing is written

    ds.load_dataset_cache_file = _load
    ds.save_dataset_cache_file = _save


def _epoch_logger(trainer: Any) -> None:
    loss = trainer.label_loss_items(trainer.tloss) if trainer.tloss is not None else {}
    losses = " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in loss.items())
    took = trainer.epoch_time or 0.0
    trainer._log(f"epoch {trainer.epoch + 1}/{trainer.epochs} {took:.0f}s {losses} {_fmt_metrics(trainer.metrics)}")


def train_detector(config: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train (or resume) the detector; write the final weights to ``out_dir/detector_<yaml stem>.pt``.

    ``resume``: continue the run in ``out_dir`` from its last checkpoint with its stored :class:`TrainConfig`
    (``config`` is then only used for ``device``/``workers``). Returns the :class:`TrainResult`.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "train_config.json"
    if resume:
        if not cfg_file.is_file():
            raise FileNotFoundError(f"cannot resume: '{cfg_file}' not found (no earlier run in {out})")
        stored = TrainConfig(**json.loads(cfg_file.read_text(encoding="utf-8")))
        stored.device, stored.workers = config.device, config.workers
        config = stored
    else:
        if not Path(config.data).is_file():
            raise FileNotFoundError(f"dataset yaml '{config.data}' not found (make it with icd make-detector-data)")
        config.data = str(Path(config.data).resolve())
        atomic_write_text(cfg_file, json.dumps(asdict(config), indent=1) + "\n")
    prepare_ultralytics(out)
    _no_cache_files()
    args: dict[str, Any] = {
        "model": config.yaml, "data": config.data, "epochs": config.epochs, "imgsz": config.imgsz,
        "batch": config.batch, "device": config.device, "workers": config.workers, "seed": config.seed,
        "patience": config.patience, "project": str(out / "runs"), "name": config.name, "exist_ok": True,
        "pretrained": False, "amp": False, "plots": False, "val": True, "save": True, "mosaic": 0.0,
        "close_mosaic": 0, "cache": False, "lr0": config.lr0, "fraction": config.fraction, "resume": resume,
        "verbose": False, "warmup_epochs": config.warmup_epochs, "time": config.hours or None}
    args.update(config.overrides or {})
    trainer_cls = _safe_trainer_class()
    trainer = trainer_cls(overrides=args)
    trainer.log_file = out / "train_log.txt"
    trainer.init_weights = config.init
    trainer.add_callback("on_fit_epoch_end", _epoch_logger)
    t0 = time.time()
    prior = _prior_seconds(out) if resume else 0.0
    trainer._log(f"{'resume' if resume else 'start'} {config.yaml} on {config.data}: {config.epochs} epochs at "
                 f"{config.imgsz} px, batch {config.batch}, device {config.device}")
    trainer.train()
    wall = time.time() - t0 + prior
    atomic_write_text(out / "wall_seconds.txt", f"{wall:.1f}\n")
    return _export(trainer, config, out, wall)


def _prior_seconds(out: Path) -> float:
    """Wall time of the earlier sessions of a resumed run (recorded per session in ``wall_seconds.txt``)."""
    f = out / "wall_seconds.txt"
    try:
        return float(f.read_text().strip())
    except (OSError, ValueError):
        return 0.0


def _export(trainer: Any, config: TrainConfig, out: Path, wall: float) -> TrainResult:
    best = trainer.wdir / "best_state.pt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    nc = int(trainer.data["nc"])
    names = [str(trainer.data["names"][i]) for i in range(nc)]
    model = build_training_model(config.yaml, nc)
    model.load_state_dict(state["ema"])
    m = trainer.metrics or {}
    map50, map5095 = float(m.get("metrics/mAP50(B)", 0.0)), float(m.get("metrics/mAP50-95(B)", 0.0))
    meta = DetectorMeta(config.yaml, nc, names, config.imgsz, extra={
        "trained_epochs": int(trainer.epoch) + 1, "best_epoch": int(state["epoch"]) + 1,
        "wall_seconds": round(wall, 1), "val_map50": round(map50, 4), "val_map50_95": round(map5095, 4),
        "train_config": asdict(config), "licence": "AGPL-3.0"})
    stem = Path(config.yaml).stem
    path = save_detector(model, out / f"detector_{stem}.pt", meta)
    return TrainResult(str(path), int(trainer.epoch) + 1, wall, map50, map5095, str(trainer.save_dir))
