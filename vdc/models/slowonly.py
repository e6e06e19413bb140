"""SlowOnly-R18 (Feichtenhofer et al. 2019, the Slow pathway alone) as the study's reference
(mmaction2 ``ResNet3dSlowOnly``) defines it.

conv1 (1,7,7) stride (1,2,2); pool1 (1,3,3) stride (1,2,2); no temporal pooling or striding anywhere
(8 frames in, 8 frames at the head); inflate (0,0,1,1): 3x3x3 convolutions only in layer3 and layer4,
(1,3,3) in layer1 and layer2. Spatial strides (1,2,2,2). BatchNorm eps 1e-5.
"""
from __future__ import annotations

from vdc.models import register_model
from vdc.models.resnet3d import ResNet3d18


@register_model("slowonly_r18")
def slowonly_r18(num_classes: int, width: float = 1.0, dropout: float = 0.5) -> ResNet3d18:
    return ResNet3d18(num_classes, width, dropout, conv="3d", stem_kernel=(1, 7, 7), stem_stride=(1, 2, 2),
                      pool1_stride_t=1, pool2=False, inflate=((0, 0), (0, 0), (1, 1), (1, 1)),
                      spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 1, 1, 1))
