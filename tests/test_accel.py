"""GPU fast paths (vdc/accel.py): none of them reaches a CPU result, and each does what it says when
built by hand (so the CUDA code path is exercised here too, on the CPU)."""
import numpy as np
import pytest
import torch

import vdc.evaluate as E
from vdc.accel import Accel, setup_backends
from vdc.condensed import CondensedSet
from vdc.config import stage_settings
from vdc.formats.teacher import save_teacher
from vdc.models import create_model
from vdc.train import loop
from vdc.train.teacher import train_teacher

torch.set_num_threads(1)

ON = {"bf16": True, "channels_last_3d": True, "fused_optimizer": True, "tf32": True, "datm_bf16": True,
      "cpu_channels_last_3d": False}
OFF = {"bf16": False, "channels_last_3d": False, "fused_optimizer": False, "tf32": False, "datm_bf16": False,
       "cpu_channels_last_3d": False}


def test_every_switch_is_off_on_the_cpu_and_the_backends_are_untouched(tiny_config):
    s = stage_settings(tiny_config(performance=ON, deterministic=False), "teacher", "tiny", arch="minic3d")
    assert s["performance"] == ON
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    a = setup_backends(s, torch.device("cpu"))
    assert (a.bf16, a.channels_last, a.fused, a.datm_bf16) == (False, False, False, False)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32) == before
    net = create_model("minic3d", 3, width=0.125)
    assert a.prepare(net) is net and net.features[0].weight.is_contiguous()
    x = torch.randn(2, 3, 8, 48, 48)
    assert a.input(x) is x
    with a.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert "cpu" in a.describe()


def test_the_performance_section_reaches_device_stages_only(tiny_config):
    cfg = tiny_config(performance={"bf16": False})
    assert stage_settings(cfg, "teacher", "tiny", arch="minic3d")["performance"]["bf16"] is False
    assert stage_settings(cfg, "teacher", "tiny", arch="minic3d")["performance"]["channels_last_3d"] is True
    assert "performance" not in stage_settings(cfg, "extract", "tiny")


def test_hand_built_fast_paths_do_what_they_say_on_the_cpu():
    """The CUDA code path, forced on the CPU: bf16 autocast, channels_last_3d model and input."""
    a = Accel(torch.device("cpu"), bf16=True, channels_last=True, fused=True)
    torch.manual_seed(0)
    net = create_model("minic3d", 3, width=0.125).eval()
    ref_net = create_model("minic3d", 3, width=0.125).eval()
    ref_net.load_state_dict(net.state_dict())
    a.prepare(net)
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 3, 8, 48, 48)
    xi = a.input(x)
    assert xi.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        with a.autocast():
            y = net(xi)
        assert y.dtype == torch.bfloat16
        ref = ref_net(x)
    assert torch.allclose(y.float(), ref, atol=0.1 * ref.abs().max().item() + 1e-3)
    assert Accel(torch.device("cpu"), datm_bf16=False, bf16=True).for_datm().bf16 is False


def test_fused_adamw_matches_the_single_tensor_kernel_and_resumes():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    plain = loop.AdamW(loop.decay_groups(a, 0.01), lr=1e-2)
    fused = loop.AdamW(loop.decay_groups(b, 0.01), lr=1e-2, fused=True)
    x = torch.randn(8, 4)
    for step in range(5):
        for m, o in ((a, plain), (b, fused)):
            o.zero_grad()
            m(x).square().sum().backward()
            o.step()
        if step == 2:  # a save/load round trip in the middle (as a checkpoint does)
            sd = fused.state_dict()
            fused = loop.AdamW(loop.decay_groups(b, 0.01), lr=1e-2, fused=True)
            fused.load_state_dict({"state": {k: {n: t.clone() for n, t in v.items()} for k, v in sd["state"].items()},
                                   "lrs": sd["lrs"]})
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert fused.state[0]["step"].item() == 5


# ----------------------------------------------------------------------------- whole stages, switches on vs off

@pytest.fixture(scope="module")
def eval_files(tmp_path_factory, frames_file):
    d = tmp_path_factory.mktemp("accel")
    rng = np.random.default_rng(0)
    CondensedSet(clips=rng.integers(0, 255, (3, 8, 52, 56, 3), dtype=np.uint8), labels=np.arange(3),
                 source_video=np.arange(3),
                 attrs={"dataset": "tiny", "method": "random", "ipc": 1, "t_c": 8, "sampling": "naive",
                        "interpolation": "none", "seed": 0, "num_classes": 3}).write(d / "sel.h5")
    torch.manual_seed(1)
    save_teacher(d / "teacher.pt", "minic3d", 3, {"width": 0.125, "dropout": 0.0},
                 create_model("minic3d", 3, width=0.125, dropout=0.0), {})
    return d


@pytest.mark.parametrize("labels,loss", [("multisl", "msegt"), ("soft", "kl")])
def test_cpu_evaluation_is_bit_identical_with_the_fast_paths_on_or_off(tiny_config, frames_file, eval_files, tmp_path,
                                                                       labels, loss):
    out = {}
    for name, perf in (("on", ON), ("off", OFF)):
        cfg = tiny_config(performance=perf, evaluate={"epochs": 3, "late_epochs": [1], "test_every": 1})
        s = stage_settings(cfg, "evaluate", "tiny", arch="minic3d", labels=labels, loss=loss, cutmix="nocutmix", seed=0)
        out[name] = E.evaluate(eval_files / "sel.h5", frames_file, eval_files / "teacher.pt", tmp_path / f"{name}.json",
                               s, workdir=tmp_path / name)
    assert [r["loss"] for r in out["on"]["curve"]] == [r["loss"] for r in out["off"]["curve"]]
    assert out["on"]["tests"] == out["off"]["tests"]


def test_cpu_teacher_is_bit_identical_with_the_fast_paths_on_or_off(tiny_config, frames_file, tmp_path):
    out = {}
    for name, perf in (("on", ON), ("off", OFF)):
        s = stage_settings(tiny_config(performance=perf), "teacher", "tiny", arch="minic3d")
        out[name] = train_teacher(frames_file, tmp_path / f"{name}.pt", tmp_path / f"{name}.json", s,
                                  workdir=tmp_path / name)
    assert out["on"]["curve"] == out["off"]["curve"]
    a = torch.load(tmp_path / "on.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "off.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cpu_channels_last_is_deterministic_and_close_to_the_contiguous_path(tiny_config, frames_file, tmp_path):
    """performance.cpu_channels_last_3d (the toy config's speed switch): the network really runs in
    channels_last_3d, two runs give the same weights, and they differ from the contiguous path only by
    float rounding."""
    s = stage_settings(tiny_config(performance={"cpu_channels_last_3d": True}), "teacher", "tiny", arch="minic3d")
    a = setup_backends(s, torch.device("cpu"))
    net = a.prepare(create_model("minic3d", 3, width=0.125))
    assert a.channels_last and net.features[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    runs = {}
    for name, settings in (("cl1", s), ("cl2", s),
                           ("plain", stage_settings(tiny_config(), "teacher", "tiny", arch="minic3d"))):
        train_teacher(frames_file, tmp_path / f"{name}.pt", tmp_path / f"{name}.json", settings, workdir=tmp_path / name)
        runs[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(runs["cl1"][k], runs["cl2"][k]) for k in runs["cl1"])
    for k, v in runs["plain"].items():
        torch.testing.assert_close(runs["cl1"][k].float(), v.float(), rtol=1e-3, atol=1e-4)


def test_test_accuracy_counts_hits_as_before():
    torch.manual_seed(0)
    logits = torch.randn(7, 6)
    labels = torch.randint(6, (7,))

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[x.view(-1).long()]

    class Clips:
        def __init__(self):
            self.labels = labels

        def __len__(self):
            return 7

        def batch(self, i, j):
            return torch.arange(i, j).float().view(-1, 1, 1, 1, 1)

    acc = loop.test_accuracy(Fixed(), Clips(), batch=3)
    top = logits.topk(5, 1).indices
    assert acc["top1"] == pytest.approx(100 * (top[:, 0] == labels).float().mean().item())
    assert acc["top5"] == pytest.approx(100 * (top == labels[:, None]).any(1).float().mean().item())
