"""I3D-R18: a ResNet-18 inflated to 3-D as the study's reference (mmaction2 ``ResNet3d``, I3D config) defines it.

conv1 (5,7,7) stride (2,2,2); pool1 (1,3,3) stride (2,2,2); a MaxPool3d (2,1,1) after layer1;
inflation ((1,1),(1,0),(1,0),(1,0)): both blocks of layer1 and the first block of layers 2-4 have
3x3x3 convolutions, the rest (1,3,3). "3x1x1 style" only changes mmaction2's bottleneck blocks; an
inflated BasicBlock has two 3x3x3 convolutions. Spatial strides (1,2,2,2), no temporal strides after
the stem. Time at 8 input frames: 8 -> 4 (conv1) -> 2 (pool1) -> 1 (pool2). BatchNorm eps 1e-5.
"""
from __future__ import annotations

from vdc.models import register_model
from vdc.models.resnet3d import ResNet3d18


@register_model("i3d_r18")
def i3d_r18(num_classes: int, width: float = 1.0, dropout: float = 0.5) -> ResNet3d18:
    return ResNet3d18(num_classes, width, dropout, conv="3d", stem_kernel=(5, 7, 7), stem_stride=(2, 2, 2),
                      pool1_stride_t=2, pool2=True, inflate=((1, 1), (1, 0), (1, 0), (1, 0)),
                      spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 1, 1, 1))
