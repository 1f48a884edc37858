"""Wide-ResNet backbone with one linear softmax head per self-supervised task.

WRN-d-w (Zagoruyko & Komodakis 2016): a 3x3 stem with 16 channels, then three
stages of n = (d - 4) / 6 pre-activation basic blocks with 16w, 32w, 64w
channels (strides 1, 2, 2), BN-ReLU, global average pooling. The network knows
nothing of fitting, thresholds or files.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import parse_backbone


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """Feature extractor: (B, in_chans, H, W) -> (B, 64 * width)."""

    def __init__(self, depth: int = 16, width: int = 4, in_chans: int = 3):
        super().__init__()
        n = (depth - 4) // 6
        chans = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(in_chans, chans[0], 3, 1, 1, bias=False)
        layers = []
        for stage, stride in zip(range(3), (1, 2, 2)):
            for b in range(n):
                c_in = chans[stage] if b == 0 else chans[stage + 1]
                layers.append(BasicBlock(c_in, chans[stage + 1], stride if b == 0 else 1))
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(chans[3])
        self.num_features = chans[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.blocks(self.stem(x))  # (B, 64w, H/4, W/4)
        x = F.relu(self.bn(x))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 64w)


class MultiHeadNet(nn.Module):
    """Shared backbone; `heads` maps a head name to its number of classes.

    channels_last=True keeps weights and activations NHWC, the layout oneDNN (CPU) and
    cuDNN convolutions prefer; inputs are converted on entry, outputs are the same.
    """

    def __init__(self, backbone: str, in_chans: int, heads: dict[str, int], dropout: float = 0.3,
                 channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        depth, width = parse_backbone(backbone)
        self.backbone = WideResNet(depth, width, in_chans)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(self.backbone.num_features, m) for name, m in heads.items()})
        for head in self.heads.values():
            nn.init.zeros_(head.bias)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # conv weights NHWC; .to(device) later keeps it

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W), strides NHWC
        f = self.dropout(self.backbone(x))  # (B, F)
        return {name: head(f) for name, head in self.heads.items()}  # name -> (B, m)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
