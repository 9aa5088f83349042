"""The reference UNet-328 architecture as a PyTorch module (needs the ``[torch]`` extra).

Same layers as ``reference.unet328`` (see its docstring and DESIGN.md), with PyTorch's own
initial weights: the export test exports it with ``lipsync model export`` and the backend
micro-benchmark times it in eager mode. ``Model(n_channels=6, mode="ave")`` mirrors the
constructor the original project's export step calls.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

CHANNELS = (32, 64, 128, 256, 512)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 project, each with BatchNorm; ReLU after the first two."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool, expand: int = 2) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = residual
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return x + out if self.residual else out


def _dw2(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        InvertedResidual(cin, cout, stride, residual=False),
        InvertedResidual(cout, cout, 1, residual=True),
    )


def _conv_bn_relu(cin: int, cout: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, pad), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Model(nn.Module):
    """UNet-328: face crop + masked crop [B,6,320,320] and audio [B,32,16,16] -> [B,3,320,320]."""

    def __init__(self, n_channels: int = 6, mode: str = "ave") -> None:
        super().__init__()
        if mode != "ave":
            raise ValueError(f"unknown audio encoder {mode!r}; supported: ave")
        c1, c2, c3, c4, c5 = CHANNELS
        self.inc = InvertedResidual(n_channels, c1, 1, residual=False)
        self.down = nn.ModuleList(
            _dw2(cin, cout, 2) for cin, cout in ((c1, c1), (c1, c2), (c2, c3), (c3, c4), (c4, c5))
        )
        self.audio = nn.Sequential(
            InvertedResidual(32, 64, 1, residual=False),
            InvertedResidual(64, 128, 1, residual=False),
            _conv_bn_relu(128, 256, stride=1, pad=1),
            InvertedResidual(256, 256, 1, residual=True),
            _conv_bn_relu(256, 512, stride=2, pad=3),
            InvertedResidual(512, 512, 1, residual=True),
            InvertedResidual(512, 512, 1, residual=True),
        )
        self.bottleneck = nn.Sequential(_dw2(2 * c5, c5, 1), _dw2(c5, c4, 1))
        self.up = nn.ModuleList(
            _dw2(cin + skip, cout, 1)
            for cin, skip, cout in (
                (c4, c4, c3),
                (c3, c3, c2),
                (c2, c2, c1),
                (c1, c1, c1),
                (c1, c1, 16),
            )
        )
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(image)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = self.bottleneck(torch.cat([skips.pop(), self.audio(audio)], dim=1))
        for stage in self.up:
            skip = skips.pop()
            x = functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
            dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
            if dy or dx:
                x = functional.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            x = stage(torch.cat([x, skip], dim=1))
        return torch.sigmoid(self.head(x))
