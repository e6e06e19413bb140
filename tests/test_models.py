"""Model definitions against study.md section 3: parameter count, defining layers, shapes."""
import pytest
import torch
import torch.nn as nn

from vdc.models import create_model, list_models
from vdc.models.resnet3d import Conv2Plus1d, mid_channels

torch.set_num_threads(1)

RESNETS = ["r2plus1d_r18", "i3d_r18", "slowonly_r18"]


def nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_minic3d_parameter_count():
    m = create_model("minic3d", 101, width=1.0)
    assert nparams(m) == 3_654_885
    assert nparams(m.features) == 3_641_856


def test_one_model_list_everywhere():
    """The registry's list is the schema's architecture enum and has a display name for the tables;
    every listed model is registered by its module and builds."""
    import yaml

    from vdc import models as M
    from vdc.config import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert sorted(schema["definitions"]["arch"]["enum"]) == list_models()
    assert set(M.DISPLAY_NAMES) == set(list_models())
    from vdc.studies import ARCH_NAMES   # the tables' copy (vdc.studies must not import torch)

    assert ARCH_NAMES == M.DISPLAY_NAMES
    for name in list_models():
        net = create_model(name, 5, width=0.0625)
        assert name in M._REGISTRY and net(torch.zeros(1, 3, 8, 48, 48)).shape == (1, 5), name
    with pytest.raises(KeyError, match="unknown model 'c3d'"):
        create_model("c3d", 5)


def test_registering_a_name_twice_warns():
    from vdc import models as M

    factory = M._REGISTRY["minic3d"]
    with pytest.warns(UserWarning, match="registered twice"):
        M.register_model("minic3d")(lambda **kw: None)
    M._REGISTRY["minic3d"] = factory


def test_mid_channels_formula():
    # floor(3*Cin*Cout*k^2 / (Cin*k^2 + 3*Cout))
    assert mid_channels(3, 64, (3, 7, 7)) == 83
    assert mid_channels(64, 64, (3, 3, 3)) == 144
    assert mid_channels(64, 128, (3, 3, 3)) == 230
    assert mid_channels(256, 512, (3, 3, 3)) == 921


def test_r2plus1d_full_width_layers():
    m = create_model("r2plus1d_r18", 101)
    c1 = m.conv1
    assert isinstance(c1, Conv2Plus1d)
    assert c1.conv_s.kernel_size == (1, 7, 7) and c1.conv_s.stride == (1, 2, 2)
    assert c1.conv_t.kernel_size == (3, 1, 1) and c1.conv_t.stride == (1, 1, 1)
    assert c1.conv_s.out_channels == 83
    assert m.pool1.kernel_size == (1, 3, 3) and m.pool1.stride == (1, 2, 2)
    assert isinstance(m.pool2, nn.Identity)
    b = m.layer2[0]
    assert b.conv1.mid_channels == 230 and b.conv1.conv_s.in_channels == 64 and b.conv1.conv_t.out_channels == 128
    assert b.conv1.conv_s.stride == (1, 2, 2) and b.conv1.conv_t.stride == (2, 1, 1)  # spatial 2, temporal 2
    assert b.conv2.mid_channels == mid_channels(128, 128, 3) == 288
    assert m.layer1[0].conv1.conv_t.stride == (1, 1, 1)
    for stage in (m.layer2, m.layer3, m.layer4):
        assert stage[0].conv1.conv_t.stride == (2, 1, 1)
    # BatchNorm eps 1e-3 (the config's norm_cfg) except inside each (2+1)D conv: mmaction2's Conv2plus1d
    # builds that BN from its own default norm_cfg (BN3d, eps 1e-5)
    inner = {id(c.bn_s) for c in m.modules() if isinstance(c, Conv2Plus1d)}
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm3d)]
    assert bns and all(bn.eps == (1e-5 if id(bn) in inner else 1e-3) for bn in bns) and len(inner) == 20
    assert m.fc.in_features == 512 and m.num_features == 512 and m.fc.out_features == 101


def test_r2plus1d_shortcut_is_factorised():
    """mmaction2 builds the downsample with the block's conv_cfg: under R(2+1)D a (2+1)D 1x1x1
    convolution (spatial stride in the first, temporal stride in the second) -> BN."""
    m = create_model("r2plus1d_r18", 101)
    for layer, cin, cout, mid in ((m.layer2, 64, 128, 54), (m.layer3, 128, 256, 109), (m.layer4, 256, 512, 219)):
        conv, bn = layer[0].downsample
        assert isinstance(conv, Conv2Plus1d) and isinstance(bn, nn.BatchNorm3d) and bn.eps == 1e-3
        # M = floor(3 Cin Cout / (Cin + 3 Cout)): 64 -> 128: floor(24576 / 448) = 54
        assert conv.mid_channels == mid == mid_channels(cin, cout, 1)
        assert conv.conv_s.kernel_size == (1, 1, 1) and conv.conv_s.stride == (1, 2, 2)
        assert conv.conv_t.kernel_size == (1, 1, 1) and conv.conv_t.stride == (2, 1, 1)
        assert conv.conv_s.bias is None and conv.conv_t.bias is None
    assert m.layer1[0].downsample is None
    # I3D and SlowOnly keep a plain 1x1x1 Conv3d shortcut (their conv_cfg is Conv3d)
    for arch in ("i3d_r18", "slowonly_r18"):
        conv = create_model(arch, 101).layer2[0].downsample[0]
        assert isinstance(conv, nn.Conv3d) and conv.kernel_size == (1, 1, 1) and conv.stride == (1, 2, 2)


def test_r2plus1d_parameter_count():
    """33,279,558 parameters for K = 101, from the definition: a (2+1)D conv (Cin -> Cout, kernel
    (kt, k, k)) has Cin·M·k² + 2M + M·Cout·kt parameters (bias-free convs, BN(M)), a BN 2C:
    stem 3 -> 64 (3,7,7), M 83: 28,303 + BN 128; eight basic blocks of two 3x3x3 (2+1)D convs + BN
    each; shortcuts 64 -> 128 (M 54): 10,476, 128 -> 256 (M 109): 42,074, 256 -> 512 (M 219):
    168,630, + BN 256, 512, 1024; backbone 33,227,745; fc 512·101 + 101 = 51,813."""
    m = create_model("r2plus1d_r18", 101)
    assert nparams(m) == 33_279_558
    assert nparams(m.fc) == 51_813
    assert sum(nparams(layer[0].downsample) for layer in (m.layer2, m.layer3, m.layer4)) == 222_972
    assert nparams(m.conv1) == 3 * 83 * 49 + 2 * 83 + 83 * 64 * 3


def _temporal_kernels(m):
    return [[(blk.conv1.kernel_size[0], blk.conv2.kernel_size[0]) for blk in layer]
            for layer in (m.layer1, m.layer2, m.layer3, m.layer4)]


def test_i3d_full_width_layers():
    m = create_model("i3d_r18", 101)
    assert m.conv1.kernel_size == (5, 7, 7) and m.conv1.stride == (2, 2, 2) and m.conv1.padding == (2, 3, 3)
    assert m.pool1.stride == (2, 2, 2)
    assert isinstance(m.pool2, nn.MaxPool3d) and m.pool2.kernel_size == (2, 1, 1) and m.pool2.stride == (2, 1, 1)
    # inflation ((1,1),(1,0),(1,0),(1,0)): an inflated basic block has two 3x3x3 convs
    assert _temporal_kernels(m) == [[(3, 3), (3, 3)], [(3, 3), (1, 1)], [(3, 3), (1, 1)], [(3, 3), (1, 1)]]
    assert [layer[0].conv1.stride for layer in (m.layer1, m.layer2, m.layer3, m.layer4)] == \
        [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert all(bn.eps == 1e-5 for bn in m.modules() if isinstance(bn, nn.BatchNorm3d))
    assert m.fc.in_features == 512


def test_slowonly_full_width_layers():
    m = create_model("slowonly_r18", 101)
    assert m.conv1.kernel_size == (1, 7, 7) and m.conv1.stride == (1, 2, 2)
    assert m.pool1.stride == (1, 2, 2) and isinstance(m.pool2, nn.Identity)
    assert _temporal_kernels(m) == [[(1, 1), (1, 1)], [(1, 1), (1, 1)], [(3, 3), (3, 3)], [(3, 3), (3, 3)]]
    assert [layer[0].conv1.stride for layer in (m.layer1, m.layer2, m.layer3, m.layer4)] == \
        [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert m.fc.in_features == 512


# feature map of layer4 (C = 512 * width, T, H, W) for 8-frame clips
FEATURE_MAPS = {
    ("r2plus1d_r18", 112): (1, 4, 4), ("r2plus1d_r18", 56): (1, 2, 2),
    ("i3d_r18", 112): (1, 4, 4), ("i3d_r18", 56): (1, 2, 2),
    ("slowonly_r18", 112): (8, 4, 4), ("slowonly_r18", 56): (8, 2, 2),
    ("minic3d", 112): None, ("minic3d", 56): None,
}


@pytest.mark.parametrize("arch,size", sorted(FEATURE_MAPS))
def test_forward_backward_shapes(arch, size):
    torch.manual_seed(0)
    width = 0.125
    m = create_model(arch, 7, width=width)
    expected_d = {"minic3d": 16}.get(arch, 64)
    assert m.num_features == expected_d
    seen = {}
    if FEATURE_MAPS[(arch, size)] is not None:
        m.layer4.register_forward_hook(lambda mod, i, o: seen.update(map=tuple(o.shape)))
    x = torch.randn(2, 3, 8, size, size)
    logits = m(x)
    assert logits.shape == (2, 7)
    if FEATURE_MAPS[(arch, size)] is not None:
        assert seen["map"] == (2, expected_d, *FEATURE_MAPS[(arch, size)])
    logits.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, expected_d)
