"""Descriptor weight files: a plain dict ``{"state_dict": {name: fp16 tensor}, "meta": {...}}`` saved with
``torch.save`` and read with ``torch.load(weights_only=True)`` (never a pickle of objects).

``meta`` holds at least ``arch``, ``dim``, ``image_size`` and free-form training information.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from matcher.io.atomic import atomic_write_bytes

__all__ = ["WeightsError", "file_sha256", "load_state", "read_weights", "save_weights"]


class WeightsError(ValueError):
    """A weights file that cannot be used (not a weights dict, wrong shapes, wrong architecture)."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any], *, half: bool = True) -> str:
    """Write ``model``'s state dict (floats as fp16 when ``half``) and ``meta`` atomically; returns the sha256."""
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    buf = io.BytesIO()
    torch.save({"state_dict": state, "meta": dict(meta)}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return file_sha256(path)


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) from a file written by :func:`save_weights`; FileNotFoundError / WeightsError."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"descriptor weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{p}: not a readable weights file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict) or not isinstance(obj.get("meta"), dict):
        raise WeightsError(f"{p}: expected a dict with 'state_dict' and 'meta'")
    return obj["state_dict"], obj["meta"]


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "<state>") -> None:
    """Copy ``state`` into ``model`` (cast to the model's dtypes); WeightsError naming ``source`` and every
    missing, unexpected or wrongly shaped tensor."""
    own = model.state_dict()
    state = dict(state)
    for k in own:  # files written before direction whitening existed: whitening off
        if k.startswith("whiten.") and k not in state:
            state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("wrong shapes: " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[0]})")
        raise WeightsError(f"{source}: weights do not fit the model: " + ", ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
