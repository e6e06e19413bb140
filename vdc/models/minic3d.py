"""MiniC3D, the study's main network (Wang et al.; study.md section 3).

Three blocks of Conv3d (3,7,7) stride (1,2,2) padding (1,3,3) with bias -> norm -> ReLU -> MaxPool3d
with kernel = stride (1,2,2), (2,2,2), (2,2,2); channels 3 -> 64 -> 128 -> 128; head: global average
pool -> Dropout(0.5) -> Linear(128, K). 3,654,885 parameters for K = 101 at width 1.
``minic3d`` uses BatchNorm3d; ``minic3d_in`` uses instance norm (GroupNorm(C, C)) for trajectory matching.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vdc.models import register_model, scaled


class MiniC3D(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, dropout: float = 0.5, norm: str = "batch"):
        super().__init__()
        chans = [3, scaled(64, width), scaled(128, width), scaled(128, width)]
        pools = [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
        layers = []
        for cin, cout, pool in zip(chans[:-1], chans[1:], pools):
            norm_layer = nn.BatchNorm3d(cout) if norm == "batch" else nn.GroupNorm(cout, cout, affine=True)
            layers += [nn.Conv3d(cin, cout, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=True),
                       norm_layer, nn.ReLU(inplace=True), nn.MaxPool3d(pool, stride=pool)]
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


@register_model("minic3d")
def minic3d(num_classes: int, width: float = 1.0, dropout: float = 0.5) -> MiniC3D:
    return MiniC3D(num_classes, width, dropout, norm="batch")


@register_model("minic3d_in")
def minic3d_in(num_classes: int, width: float = 1.0, dropout: float = 0.5) -> MiniC3D:
    return MiniC3D(num_classes, width, dropout, norm="instance")
