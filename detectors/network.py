"""YOLOv8 detection network in plain PyTorch, for inference without importing ultralytics.

The modules mirror ultralytics' ``DetectionModel("yolov8<scale>.yaml", nc=nc)`` (``yolov8.yaml``, legacy v8
head) layer for layer, so the ``state_dict()`` of a model trained with ultralytics loads here with
``strict=True`` (same keys and shapes). In eval mode the forward returns what ultralytics' eval-mode
``DetectionModel(x)[0]`` returns: (B, 4 + nc, A) with boxes (cx, cy, w, h) in input px, then per-class
sigmoid probabilities, for the A anchor points of the stride 8, 16 and 32 grids (in that order, row-major).

Importing ultralytics changes process-global state (PIL, cv2 threads, print options, environment), which is
why inference uses this module instead. Only torch and the standard library are imported here.
"""
from __future__ import annotations

import math
import re
from pathlib import PurePath

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = [
    "DFL",
    "SCALES",
    "SPPF",
    "STRIDES",
    "Bottleneck",
    "C2f",
    "Concat",
    "Conv",
    "Detect",
    "YOLOv8",
    "build_network",
    "dist2bbox",
    "make_anchors",
    "scale_from_yaml",
]

# scale -> (depth multiple, width multiple, max channels), as in ultralytics' yolov8.yaml
SCALES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}
STRIDES: tuple[int, int, int] = (8, 16, 32)  # of the P3, P4, P5 outputs
REG_MAX = 16  # DFL bins per box side
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.03  # what ultralytics sets on every BatchNorm2d after building
_YAML_RE = re.compile(r"yolov8([nsmlx])\.ya?ml")


def scale_from_yaml(yaml: str) -> str:
    """The scale letter of a yolov8 yaml name ("yolov8n.yaml" -> "n"); ValueError for anything else."""
    match = _YAML_RE.fullmatch(PurePath(str(yaml)).name)
    if match is None:
        raise ValueError(f"unknown detector yaml {yaml!r}: expected yolov8<n|s|m|l|x>.yaml")
    return match.group(1)


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d + SiLU: (B, c1, H, W) -> (B, c2, H / s, W / s)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act: nn.Module = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm (running statistics) into the conv weight and bias; idempotent."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        assert bn.running_mean is not None and bn.running_var is not None
        self.conv.weight, self.conv.bias = fuse_conv_bn_weights(
            self.conv.weight, self.conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        self.conv.requires_grad_(False)
        self.bn = nn.Identity()


class Bottleneck(nn.Module):
    """Two 3x3 Convs, plus the input if ``shortcut`` and c1 == c2: (B, c1, H, W) -> (B, c2, H, W)."""

    def __init__(self, c1: int, c2: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with n Bottlenecks on half the channels: (B, c1, H, W) -> (B, c2, H, W)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2  # hidden channels (expansion 0.5)
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Fast spatial pyramid pooling (3 chained k x k max-pools): (B, c1, H, W) -> (B, c2, H, W).

    cv1 is activated (SiLU) for YOLOv8: ultralytics' SPPF class defaults to an unactivated cv1 (the YOLO26
    form), but its ``parse_model`` puts the SiLU back for yaml rows like yolov8's ``[c2, k]``."""

    def __init__(self, c1: int, c2: int, k: int = 5, cv1_act: bool = True) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, act=cv1_act)
        self.cv2 = Conv(4 * hidden, c2)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    """Concatenate a list of (B, Ci, H, W) tensors along channels: -> (B, sum Ci, H, W)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution focal loss decoding: (B, 4 * bins, A) logits -> (B, 4, A) expected distances in bins.

    Softmax over the bins of each side, then the expectation via a fixed 1x1 conv with weights 0..bins-1."""

    def __init__(self, bins: int = REG_MAX) -> None:
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        probs = x.view(b, 4, self.bins, a).transpose(1, 2).softmax(1)  # (B, bins, 4, A)
        return self.conv(probs).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: tuple[int, ...],
                 offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre anchor points (2, A) in grid units (x, y) and their strides (1, A) for feature maps
    (B, C, Hi, Wi), level after level, row-major within a level; dtype and device of ``feats[0]``."""
    points, stride_rows = [], []
    ref = feats[0]
    for feat, stride in zip(feats, strides, strict=True):
        h, w = feat.shape[2:]
        sx = torch.arange(w, device=ref.device).to(ref.dtype) + offset
        sy = torch.arange(h, device=ref.device).to(ref.dtype) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx.reshape(-1), gy.reshape(-1)), 0))
        stride_rows.append(torch.full((1, h * w), float(stride), dtype=ref.dtype, device=ref.device))
    return torch.cat(points, 1), torch.cat(stride_rows, 1)


def dist2bbox(dist: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(B, 4, A) left/top/right/bottom distances and (2, A) anchor points -> (B, 4, A) boxes (cx, cy, w, h)."""
    lt, rb = dist.chunk(2, 1)
    x1y1 = anchors - lt
    x2y2 = anchors + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)


class Detect(nn.Module):
    """Decoupled YOLOv8 head (legacy v8 form: cv3 is Conv, Conv, Conv2d).

    Features [(B, ch[i], H / s_i, W / s_i) for s_i in 8, 16, 32] -> (B, 4 + nc, A): boxes (cx, cy, w, h) in
    input px, then per-class sigmoid probabilities; A = sum of Hi * Wi."""

    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...] = STRIDES) -> None:
        super().__init__()
        self.nc, self.strides = nc, tuple(strides)
        c_box = max(16, ch[0] // 4, 4 * REG_MAX)
        c_cls = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c_box, 3), Conv(c_box, c_box, 3), nn.Conv2d(c_box, 4 * REG_MAX, 1)) for c in ch)
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, c_cls, 3), Conv(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)) for c in ch)
        self.dfl = DFL(REG_MAX)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        b = feats[0].shape[0]
        dist = torch.cat([head(f).view(b, 4 * REG_MAX, -1) for head, f in zip(self.cv2, feats)], 2)
        logits = torch.cat([head(f).view(b, self.nc, -1) for head, f in zip(self.cv3, feats)], 2)
        anchors, strides = make_anchors(feats, self.strides)
        boxes = dist2bbox(self.dfl(dist), anchors.unsqueeze(0)) * strides
        return torch.cat((boxes, logits.sigmoid()), 1)


class YOLOv8(nn.Module):
    """YOLOv8 detector of one scale; ``self.model`` holds the 23 layers of yolov8.yaml at their indices.

    forward: (B, 3, H, W) float in [0, 1], H and W multiples of 32 -> (B, 4 + nc, A), A = H * W * 21 / 1024
    (decoded as at inference in every mode; there is no training output)."""

    def __init__(self, scale: str = "n", nc: int = 1) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"unknown yolov8 scale {scale!r}: expected one of {', '.join(SCALES)}")
        if nc < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        depth, width, max_ch = SCALES[scale]
        self.scale, self.nc = scale, int(nc)

        def ch(c: int) -> int:  # width scaling, rounded up to a multiple of 8
            return math.ceil(min(c, max_ch) * width / 8) * 8

        def rep(n: int) -> int:  # depth scaling of repeats
            return max(round(n * depth), 1) if n > 1 else n

        c1, c2, c3, c4, c5 = (ch(c) for c in (64, 128, 256, 512, 1024))
        self.model = nn.ModuleList([
            Conv(3, c1, 3, 2),  # 0  P1/2
            Conv(c1, c2, 3, 2),  # 1  P2/4
            C2f(c2, c2, rep(3), True),  # 2
            Conv(c2, c3, 3, 2),  # 3  P3/8
            C2f(c3, c3, rep(6), True),  # 4
            Conv(c3, c4, 3, 2),  # 5  P4/16
            C2f(c4, c4, rep(6), True),  # 6
            Conv(c4, c5, 3, 2),  # 7  P5/32
            C2f(c5, c5, rep(3), True),  # 8
            SPPF(c5, c5, 5),  # 9
            nn.Upsample(scale_factor=2, mode="nearest"),  # 10
            Concat(),  # 11  [10, 6]
            C2f(c5 + c4, c4, rep(3)),  # 12
            nn.Upsample(scale_factor=2, mode="nearest"),  # 13
            Concat(),  # 14  [13, 4]
            C2f(c4 + c3, c3, rep(3)),  # 15  P3 out
            Conv(c3, c3, 3, 2),  # 16
            Concat(),  # 17  [16, 12]
            C2f(c3 + c4, c4, rep(3)),  # 18  P4 out
            Conv(c4, c4, 3, 2),  # 19
            Concat(),  # 20  [19, 9]
            C2f(c4 + c5, c5, rep(3)),  # 21  P5 out
            Detect(self.nc, (c3, c4, c5)),  # 22
        ])
        self.stride = STRIDES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"input must be (B, C, H, W) with H, W multiples of 32, got {tuple(x.shape)}")
        m = self.model
        outs: list[torch.Tensor] = []
        for i in range(10):  # backbone
            x = m[i](x)
            outs.append(x)
        p3, p4, p5 = outs[4], outs[6], outs[9]
        h12 = m[12](m[11]([m[10](p5), p4]))
        n3 = m[15](m[14]([m[13](h12), p3]))
        n4 = m[18](m[17]([m[16](n3), h12]))
        n5 = m[21](m[20]([m[19](n4), p5]))
        return m[22]([n3, n4, n5])

    def fuse(self) -> YOLOv8:
        """Fold every BatchNorm into its conv (inference only; the state dict then has conv biases, no bn)."""
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self


def build_network(yaml: str = "yolov8n.yaml", nc: int = 1) -> torch.nn.Module:
    """A randomly initialised :class:`YOLOv8` for ``yaml`` ("yolov8<n|s|m|l|x>.yaml") and ``nc`` classes,
    in eval mode; ValueError for an unknown yaml name. Load ultralytics weights with ``load_state_dict``."""
    return YOLOv8(scale_from_yaml(yaml), int(nc)).eval()
