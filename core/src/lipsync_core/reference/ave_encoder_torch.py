"""The "ave" audio encoder as a PyTorch module (needs the ``[torch]`` extra).

Same blocks as ``reference.ave_encoder`` and the state-dict layout of published encoder weights
(``audio_encoder.<block>.conv_block.<0: Conv2d, 1: BatchNorm2d>.<param>``), so
``lipsync model export --module lipsync_core.reference.ave_encoder_torch:AudioEncoder --io ave``
turns such a checkpoint into the served ONNX encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from lipsync_core.reference.ave_encoder import BLOCKS, Block


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d (+ the input when residual), then ReLU."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(block.cin, block.cout, block.kernel, block.stride, block.padding),
            nn.BatchNorm2d(block.cout),
        )
        self.residual = block.residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv_block(x)
        activated: torch.Tensor = self.act(out + x if self.residual else out)
        return activated


class AudioEncoder(nn.Module):
    """Mel windows ``[B, 1, 80, 16]`` -> features ``[B, 512]``."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(*(ConvBlock(block) for block in BLOCKS))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.audio_encoder(mel), 1)
