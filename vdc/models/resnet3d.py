"""A ResNet-18 for video, the common builder of R(2+1)D-18, I3D-R18 and SlowOnly-R18 (study.md section 3).

The three networks differ only in their stem, their pooling and which convolutions are 3-D; they share

    stem:  conv1 (kt,7,7) stride (st,2,2) -> BN -> ReLU -> MaxPool3d (1,3,3) stride (pt,2,2) pad (0,1,1)
    layer1..4: two BasicBlocks each, channels 64, 128, 256, 512 (x width), spatial strides (1,2,2,2)
    [optional MaxPool3d (2,1,1) after layer1 ("pool2", I3D only)]
    head:  global average pool -> Dropout -> Linear(512 x width, K)

as in mmaction2's ``ResNet3d`` / ``ResNet2Plus1d``, which the study's reference code builds on.

A BasicBlock is ``conv(3x3) -> BN -> ReLU -> conv(3x3) -> BN, + shortcut, -> ReLU``. When the block is
*inflated* both its convolutions have temporal kernel 3 (3x3x3, padding (1,1,1)); otherwise they are
(1,3,3). The block's first convolution carries the stride (temporal, spatial, spatial). The shortcut is
the identity, or, when the shape changes, a 1x1x1 convolution *of the block's conv type* with the
block's stride -> BN: mmaction2 ``ResNet3d.make_res_layer`` builds the downsample as
``ConvModule(inplanes, planes, kernel_size=1, stride=(ts, ss, ss), conv_cfg=conv_cfg, norm_cfg=norm_cfg,
act_cfg=None)`` (Video-DC's copy: ``mmaction2/mmaction/models/backbones/resnet3d.py`` 596-606), so under
R(2+1)D's ``conv_cfg=dict(type='Conv2plus1d')`` it is a factorised 1x1x1 convolution.

R(2+1)D factorises every k_t x k x k convolution (stem, blocks and shortcuts) into

    Conv3d(Cin, M, (1,k,k), stride (1,s,s)) -> BN(M) -> ReLU -> Conv3d(M, Cout, (k_t,1,1), stride (s_t,1,1))

with M = floor(3 * Cin * Cout * k^2 / (Cin * k^2 + 3 * Cout)) mid-channels (mmaction2's Conv2plus1d,
``mmaction/models/common/conv2plus1d.py`` 73-94; the factor 3 is literal, so the stem's (3,7,7) conv
from 3 to 64 channels has M = 83 and a 1x1x1 shortcut from 64 to 128 channels M = 54). The inner BN(M)
has PyTorch's default eps 1e-5 whatever the network's: Conv2plus1d builds it from its own
``norm_cfg=dict(type='BN3d')`` (line 46, 86), because mmcv's ``ConvModule`` passes no ``norm_cfg`` to
the convolution it builds; the network's eps (1e-3 for R(2+1)D) applies to every other BatchNorm.

Weights keep PyTorch's default initialisation (the evaluation protocol trains students from it).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from vdc.models import scaled


def _triple(k) -> tuple[int, int, int]:
    return (k, k, k) if isinstance(k, int) else tuple(k)


def mid_channels(cin: int, cout: int, kernel) -> int:
    """Mid-channels of a (2+1)D conv: floor(3 * Cin * Cout * kh * kw / (Cin * kh * kw + 3 * Cout)), at least 1."""
    _, kh, kw = _triple(kernel)
    return max(1, (3 * cin * cout * kh * kw) // (cin * kh * kw + 3 * cout))


class Conv2Plus1d(nn.Module):
    """A (k_t, k, k) convolution factorised into a spatial (1, k, k) and a temporal (k_t, 1, 1) one, with
    BN(M, eps 1e-5) -> ReLU between them (mmaction2 ``Conv2plus1d``; see the module docstring)."""

    def __init__(self, cin: int, cout: int, kernel, stride, padding):
        super().__init__()
        kt, kh, kw = _triple(kernel)
        st, sh, sw = _triple(stride)
        pt, ph, pw = _triple(padding)
        self.mid_channels = mid_channels(cin, cout, kernel)
        self.conv_s = nn.Conv3d(cin, self.mid_channels, (1, kh, kw), (1, sh, sw), (0, ph, pw), bias=False)
        self.bn_s = nn.BatchNorm3d(self.mid_channels, eps=1e-5)
        self.relu = nn.ReLU(inplace=True)
        self.conv_t = nn.Conv3d(self.mid_channels, cout, (kt, 1, 1), (st, 1, 1), (pt, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


def make_conv(cin: int, cout: int, kernel, stride, padding, conv: str) -> nn.Module:
    """A bias-free convolution, plain 3-D (``conv="3d"``) or factorised (``conv="2plus1d"``)."""
    if conv == "2plus1d":
        return Conv2Plus1d(cin, cout, kernel, stride, padding)
    if conv == "3d":
        return nn.Conv3d(cin, cout, kernel, stride, padding, bias=False)
    raise ValueError(f"unknown conv type '{conv}' (3d, 2plus1d)")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (3x3x3 when ``inflate``) with a residual connection."""

    def __init__(self, cin: int, cout: int, stride=(1, 1, 1), inflate: bool = True, conv: str = "3d", eps: float = 1e-5):
        super().__init__()
        kernel, padding = ((3, 3, 3), (1, 1, 1)) if inflate else ((1, 3, 3), (0, 1, 1))
        stride = _triple(stride)
        self.conv1 = make_conv(cin, cout, kernel, stride, padding, conv)
        self.bn1 = nn.BatchNorm3d(cout, eps=eps)
        self.conv2 = make_conv(cout, cout, kernel, 1, padding, conv)
        self.bn2 = nn.BatchNorm3d(cout, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != (1, 1, 1) or cin != cout:
            self.downsample = nn.Sequential(make_conv(cin, cout, 1, stride, 0, conv), nn.BatchNorm3d(cout, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet3d18(nn.Module):
    """ResNet-18 for clips [N, 3, T, H, W]; see the module docstring for the layout.

    Args:
        num_classes: K.
        width: multiplies every channel count (64, 128, 256, 512 at 1.0).
        dropout: dropout before the classifier.
        conv: "3d" or "2plus1d" (every convolution, shortcuts included).
        stem_kernel, stem_stride: conv1's kernel and stride, e.g. (5,7,7), (2,2,2).
        pool1_stride_t: temporal stride of the stem's max-pool.
        pool2: add a MaxPool3d (2,1,1) stride (2,1,1) after layer1.
        inflate: per stage, per block, 1 = 3x3x3 convolutions, 0 = (1,3,3).
        spatial_strides, temporal_strides: per stage, applied by the first block's first convolution.
        bn_eps: BatchNorm epsilon (everywhere but inside a (2+1)D convolution, which keeps 1e-5).
    """

    def __init__(self, num_classes: int, width: float = 1.0, dropout: float = 0.5, *, conv: str = "3d",
                 stem_kernel=(3, 7, 7), stem_stride=(1, 2, 2), pool1_stride_t: int = 1, pool2: bool = False,
                 inflate: Sequence[Sequence[int]] = ((1, 1),) * 4, spatial_strides=(1, 2, 2, 2),
                 temporal_strides=(1, 1, 1, 1), bn_eps: float = 1e-5):
        super().__init__()
        chans = [scaled(c, width) for c in (64, 128, 256, 512)]
        stem_padding = tuple((k - 1) // 2 for k in stem_kernel)
        self.conv1 = make_conv(3, chans[0], stem_kernel, stem_stride, stem_padding, conv)
        self.bn1 = nn.BatchNorm3d(chans[0], eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(pool1_stride_t, 2, 2), padding=(0, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1)) if pool2 else nn.Identity()
        cin = chans[0]
        stages = []
        for cout, infl, ss, ts in zip(chans, inflate, spatial_strides, temporal_strides):
            blocks = [BasicBlock(cin if i == 0 else cout, cout, (ts, ss, ss) if i == 0 else 1, bool(f), conv, bn_eps)
                      for i, f in enumerate(infl)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = chans[-1]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] -> pooled embedding [N, num_features]."""
        x = self.pool1(self.relu(self.bn1(self.conv1(x))))
        x = self.pool2(self.layer1(x))
        x = self.layer4(self.layer3(self.layer2(x)))
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] -> logits [N, K]."""
        return self.fc(self.dropout(self.forward_features(x)))
