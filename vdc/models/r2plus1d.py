"""R(2+1)D-18 (Tran et al. 2018) as the study's reference (mmaction2 ``ResNet2Plus1d``) defines it.

Every convolution, the 1x1x1 shortcuts included (mmaction2 builds them with the block's conv_cfg), is a
(2+1)D conv with M = floor(3 * Cin * Cout * k^2 / (Cin * k^2 + 3 * Cout)) mid-channels; BatchNorm eps
1e-3 (Video-DC ``mmaction2/configs/_base_/models/r2plus1d_r18.py``: ``norm_cfg`` eps 1e-3) except the
BN inside each (2+1)D conv (1e-5, mmaction2's Conv2plus1d default: vdc/models/resnet3d.py);
conv1 (3,7,7) stride (1,2,2); pool1 (1,3,3) stride (1,2,2); all blocks 3x3x3 (factorised);
spatial strides (1,2,2,2), temporal strides (1,2,2,2); no pool after layer1.
Feature map 512 x 1 x 4 x 4 at 8 x 112^2 (T: 8 -> 8, 4, 2, 1 through the stages).
"""
from __future__ import annotations

from vdc.models import register_model
from vdc.models.resnet3d import ResNet3d18


@register_model("r2plus1d_r18")
def r2plus1d_r18(num_classes: int, width: float = 1.0, dropout: float = 0.5) -> ResNet3d18:
    return ResNet3d18(num_classes, width, dropout, conv="2plus1d", stem_kernel=(3, 7, 7), stem_stride=(1, 2, 2),
                      pool1_stride_t=1, pool2=False, inflate=((1, 1),) * 4, spatial_strides=(1, 2, 2, 2),
                      temporal_strides=(1, 2, 2, 2), bn_eps=1e-3)
