"""EDC: the statistics pass and file, the matching loss, the EMA, network rotation, the job end to end
through the resume protocol (kill, changed teacher, refused checkpoint, clean-up) and the output."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from vdc.condense import edc as edc_mod
from vdc.condense.base import Context
from vdc.condense.edc import StatMatcher, StepSettings, ema_stat
from vdc.condense.edc_stats import compute_stats
from vdc.condense.stage import run_condense
from vdc.condensed import CondensedSet
from vdc.config import stage_settings
from vdc.data import clips as C
from vdc.data.frames import Frames, write_frames
from vdc.errors import NonFiniteError
from vdc.formats.stats import EDCStats, LayerStats, bn_layers, read_stats, write_stats
from vdc.formats.teacher import save_teacher
from vdc.models import create_model
from vdc.resume import content_id, job_dir

K, SIZE = 3, 48


def _frames(path, per_class=2, length=16, size=SIZE, seed=0):
    """Planted videos: class k has brightness around 60k + noise, so classes differ."""
    rng = np.random.default_rng(seed)
    vids, labels, splits = [], [], []
    for split, n in ((0, per_class), (1, 1)):
        for k in range(K):
            for _ in range(n):
                base = rng.integers(0, 120, (1, 1, 1, 3)) + 60 * k
                noise = rng.integers(0, 60, (length, size, size, 3))
                vids.append(np.clip(base + noise, 0, 255).astype(np.uint8))
                labels.append(k)
                splits.append(split)
    write_frames(path, vids, labels, splits, [f"c{k}" for k in range(K)])
    return path


def _randomise_bn(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _, m in bn_layers(net):
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def _tiny(arch="minic3d", width=0.125, seed=0):
    torch.manual_seed(seed)
    return _randomise_bn(create_model(arch, K, width=width), seed).eval()


# ------------------------------------------------------------------------------ statistics pass

def test_stats_pass_reproduces_hand_computed_class_moments(tmp_path):
    path = _frames(tmp_path / "f.h5")
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm3d(3), nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    _randomise_bn(net).eval()
    before = [m.running_mean.clone() for _, m in bn_layers(net)]
    with Frames(path) as fr:
        stats = compute_stats(net, fr, clip_len=4, clip_interval=4, input_size=SIZE, batch=4)
        train = fr.split_ids("train")
        # by hand: length 16, 4 frames at interval 4 -> span 13, start (16-13)//2 = 1 -> frames 1, 5, 9, 13
        per_sample = {0: [], 1: []}
        for v in train:
            x = torch.from_numpy(fr.read_video(int(v))[[1, 5, 9, 13]]).float() / 255  # [T, H, W, 3]
            x = ((x - torch.tensor(C.MEAN)) / torch.tensor(C.STD)).permute(3, 0, 1, 2)[None]  # [1, 3, T, H, W]
            z1 = x
            with torch.no_grad():
                z2 = net[1](net[0](x))
            per_sample[0].append((int(fr.labels[v]), z1.mean((0, 2, 3, 4)), z1.var((0, 2, 3, 4), unbiased=False)))
            per_sample[1].append((int(fr.labels[v]), z2.mean((0, 2, 3, 4)), z2.var((0, 2, 3, 4), unbiased=False)))
    assert stats.num_clips == len(train) == 2 * K
    assert list(stats.layers) == ["0", "2"]
    for li, name in enumerate(["0", "2"]):
        ls = stats.layers[name]
        for k in range(K):
            ms = torch.stack([m for lab, m, _ in per_sample[li] if lab == k])
            vs = torch.stack([v for lab, _, v in per_sample[li] if lab == k])
            np.testing.assert_allclose(ls.class_mean[k], ms.mean(0).numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(ls.class_var[k], vs.mean(0).numpy(), rtol=1e-4, atol=1e-5)
        assert ls.counts.tolist() == [2] * K
    np.testing.assert_allclose(stats.layers["2"].running_var, net[2].running_var.numpy())
    # the pass leaves the network's running statistics alone
    for b, (_, m) in zip(before, bn_layers(net)):
        assert torch.equal(b, m.running_mean)
    # round trip: mean stays mean, variance stays variance
    stats.attrs.update(arch="custom")
    write_stats(stats, tmp_path / "s.h5")
    back = read_stats(tmp_path / "s.h5")
    assert back.num_clips == 2 * K and back.attrs["arch"] == "custom"
    write_stats(stats, tmp_path / "again.h5")          # equal statistics, equal content identity
    assert content_id(tmp_path / "again.h5") == content_id(tmp_path / "s.h5")
    for name, ls in stats.layers.items():
        np.testing.assert_array_equal(back.layers[name].class_mean, ls.class_mean)
        np.testing.assert_array_equal(back.layers[name].class_var, ls.class_var)
        assert not np.allclose(back.layers[name].class_mean, back.layers[name].class_var)
        np.testing.assert_array_equal(back.layers[name].running_mean, ls.running_mean)


def test_stats_pass_on_minic3d_matches_per_sample_loop(tmp_path):
    path = _frames(tmp_path / "f.h5")
    net = _tiny()
    with Frames(path) as fr:
        stats = compute_stats(net, fr, clip_len=4, clip_interval=4, input_size=SIZE, batch=5)
        vids = fr.split_ids("train")
        x = torch.from_numpy(np.stack([fr.read_video(int(v))[[1, 5, 9, 13]] for v in vids])).float() / 255
        x = C.normalize(x.permute(0, 4, 1, 2, 3))
        labels = fr.labels[vids]
    with torch.no_grad():
        z = net.features[:5](x)  # input of the second BatchNorm3d ("features.5")
    m, v = z.mean((2, 3, 4)), z.var((2, 3, 4), unbiased=False)
    for k in range(K):
        sel = torch.from_numpy(labels == k)
        np.testing.assert_allclose(stats.layers["features.5"].class_mean[k], m[sel].mean(0).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats.layers["features.5"].class_var[k], v[sel].mean(0).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        with Frames(path) as fr:
            compute_stats(net.train(), fr, 4, 4, SIZE)


# ------------------------------------------------------------------------------ matching loss and EMA

def _batch_moments(net, x):
    """mean/var over (batch, t, h, w) at every BN input, by a plain forward with hooks."""
    out = {}
    hs = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, (i[0].mean((0, 2, 3, 4)),
                                                                          i[0].var((0, 2, 3, 4), unbiased=False))))
          for n, m in bn_layers(net)]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    return out


def test_matching_loss_zero_at_targets_positive_otherwise_and_reaches_clips():
    net = _tiny()
    x = torch.randn(4, 3, 8, SIZE, SIZE)
    y = torch.tensor([0, 1, 1, 2])
    for _ in bn_layers(net):  # layer l's input depends on the BN layers before it: settle them in order
        mom = _batch_moments(net, x)
        for n, m in bn_layers(net):
            m.running_mean.copy_(mom[n][0])
            m.running_var.copy_(mom[n][1])
    mom = _batch_moments(net, x)
    layers = {n: LayerStats(class_mean=np.tile(mom[n][0].numpy(), (K, 1)), class_var=np.tile(mom[n][1].numpy(), (K, 1)),
                            counts=np.ones(K, np.int64), running_mean=mom[n][0].numpy(), running_var=mom[n][1].numpy())
              for n in mom}
    stats = EDCStats(layers=layers, attrs={"num_clips": K})
    for class_wise in (True, False):
        matcher = StatMatcher(net, stats, 10.0, 0.8, class_wise)
        matcher.labels = y
        net(x)
        assert float(matcher.loss().detach()) == pytest.approx(0.0, abs=1e-4)
        matcher.remove()
    # move one class target: the class-wise term becomes positive and its gradient reaches the clips
    stats.layers["features.1"].class_mean[1] += 1.0
    matcher = StatMatcher(net, stats, 10.0, 0.8, True)
    xg = x.clone().requires_grad_(True)
    matcher.labels = y
    net(xg)
    loss = matcher.loss()
    assert float(loss.detach()) > 0.1
    loss.backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    # the first layer is weighted by first_layer_weight: with weight 0 that term vanishes
    matcher.remove()
    m0 = StatMatcher(net, stats, 0.0, 0.8, True)
    m0.labels = y
    net(x)
    assert float(m0.loss().detach()) == pytest.approx(0.0, abs=1e-4)
    m0.remove()


def test_ema_has_the_ema_value_and_the_current_batch_gradient():
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    prev = torch.tensor([0.5, 0.5, 0.5])
    cur = w * w
    out, state = ema_stat(prev, cur, 0.8)
    expected = 0.8 * prev + 0.2 * (w * w).detach()
    torch.testing.assert_close(out.detach(), expected)
    torch.testing.assert_close(state, expected)
    assert not state.requires_grad
    out.sum().backward()
    torch.testing.assert_close(w.grad, 2 * w.detach())  # d(sum w²)/dw: the current batch's gradient
    first, state0 = ema_stat(None, cur.detach() + 1, 0.8)  # first iteration: the EMA starts at the batch value
    torch.testing.assert_close(first, cur.detach() + 1)
    torch.testing.assert_close(state0, first)


# ------------------------------------------------------------------------------ the method

EDC = {"iterations": 4, "batch": 4, "checkpoint_every": 2, "temporal": "tc6-sliding-none"}


@pytest.fixture()
def edc(tiny_config, frames_file, tmp_path):
    """edc(name, archs=("minic3d",), **method) -> (run() -> the set run_condense writes to <tmp>/<name>.h5,
    the job's checkpoint folder). Teachers are tiny random networks with random BN statistics, written as
    teacher files (``edc.teachers``) with their statistics files (``edc.stats``)."""
    teachers, stats = {}, {}
    for i, arch in enumerate(("minic3d", "slowonly_r18")):
        width = 0.125 * (i + 1)
        net = _tiny(arch, width=width, seed=i)
        teachers[arch] = tmp_path / f"teacher_{arch}.pt"
        save_teacher(teachers[arch], arch, K, {"width": width, "dropout": 0.5}, net, {})
        with Frames(frames_file) as fr:
            st = compute_stats(net, fr, 8, 8, SIZE)
        stats[arch] = tmp_path / f"stats_{arch}.h5"
        write_stats(st, stats[arch])

    def make(name, archs=("minic3d",), **method):
        cfg = tiny_config(methods={"edc": {**EDC, "networks": list(archs), **method}})
        st = stage_settings(cfg, "condense", "tiny", method="edc", ipc=2, seed=3)
        out = tmp_path / f"{name}.h5"

        def run(init_path=None):
            return run_condense(frames_file, out, st, teacher_paths=teachers, stats_paths=stats, init_path=init_path)
        run.settings = st
        return run, job_dir(st["workdir"], "condense", out)
    make.teachers, make.stats = teachers, stats
    return make


def _context(st, frames_file, workdir, **kw):
    return Context(frames_path=frames_file, ipc=st["ipc"], seed=st["seed"], settings=st["settings"], stage=st,
                   device=torch.device("cpu"), workdir=workdir, **kw)


def test_condense_output_shapes_labels_and_range(edc, frames_file, tmp_path):
    run, folder = edc("set")
    cs = run()
    assert cs.clips.shape == (K * 2, 6, SIZE, SIZE, 3) and cs.clips.dtype == np.float32
    assert cs.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert cs.clips.min() >= 0 and cs.clips.max() <= 1
    with Frames(frames_file) as fr:
        assert (fr.labels[cs.source_video] == cs.labels).all() and (fr.split[cs.source_video] == 0).all()
    assert cs.attrs["networks"] == ["minic3d"] and cs.attrs["settings"]["iterations"] == 4
    assert cs.attrs["chunks"] == 2 and cs.attrs["t_c"] == 6
    assert CondensedSet.read(tmp_path / "set.h5").attrs["networks"] == ["minic3d"]
    assert not folder.exists()                                   # checkpoint removed after success
    # the clips moved away from their real initialisation
    init, _, _ = edc_mod.init_real(_context(run.settings, frames_file, tmp_path / "w"), 6)
    assert float(np.abs(cs.clips - init.numpy()).max()) > 1e-3


def test_rotation_visits_every_network_in_order(edc, monkeypatch):
    real, calls = edc_mod.edc_step, []

    def recording(x, y, net, *a, **kw):
        calls.append(len(bn_layers(net)))                        # MiniC3D: 3 BatchNorm3d, SlowOnly-R18: 20
        return real(x, y, net, *a, **kw)

    monkeypatch.setattr(edc_mod, "edc_step", recording)
    cs = edc("rot", ("minic3d", "slowonly_r18"), iterations=3, batch=6)[0]()   # one chunk of all 6 clips
    assert calls[0] == calls[2] == 3 and calls[1] > 3 and len(calls) == 3
    assert cs.attrs["networks"] == ["minic3d", "slowonly_r18"]


def test_killed_run_resumes_to_the_same_result(edc, kill_after):
    full = edc("full", iterations=5)[0]()
    run, folder = edc("resumed", iterations=5)
    saved = kill_after(4)              # chunk 0: its 2, 4, end; chunk 1: it 2 -> killed
    with pytest.raises(KeyboardInterrupt):
        run()
    assert (saved[-1]["chunk"], saved[-1]["iter"]) == (1, 2) and (folder / "edc.pt").exists()
    kill_after(None)
    np.testing.assert_array_equal(run().clips, full.clips)
    assert not folder.exists()


def _perturb_teacher(path):
    """Retrained teacher stand-in: other convolution weights, same BatchNorm statistics (so the
    statistics file still passes its check)."""
    t = torch.load(path, weights_only=True)
    t["state_dict"]["features.0.weight"] += 0.05
    torch.save(t, path)


def test_changed_teacher_never_resumes_an_old_checkpoint(edc, kill_after):
    old = edc("old")[0]()
    run, folder = edc("run")
    kill_after(3)                      # killed after chunk 0 (a finished chunk of the old teacher's set)
    with pytest.raises(KeyboardInterrupt):
        run()
    kill_after(None)
    _perturb_teacher(edc.teachers["minic3d"])
    after = run()
    fresh = edc("fresh")[0]()
    np.testing.assert_array_equal(after.clips, fresh.clips)
    assert not np.array_equal(after.clips, old.clips)
    assert not folder.exists()


class Payload:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_checkpoint_is_refused_and_the_job_starts_over(edc, tmp_path):
    fresh = edc("fresh")[0]()
    run, folder = edc("run")
    folder.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save({"identity": "x", "state": {"chunk": Payload(marker)}}, folder / "edc.pt")
    np.testing.assert_array_equal(run().clips, fresh.clips)
    assert not marker.exists() and (folder / "edc.pt.corrupt").exists() and not (folder / "edc.pt").exists()


def test_non_finite_loss_stops_the_job(edc, tmp_path):
    t = torch.load(edc.teachers["minic3d"], weights_only=True)
    t["state_dict"]["features.1.running_var"][0] = -1.0          # a broken network: NaN activations
    torch.save(t, edc.teachers["minic3d"])
    run, _ = edc("nan", class_wise=False)
    with pytest.raises(NonFiniteError, match=r"condense tiny/edc ipc2 tc6-sliding-none seed3"):
        run()
    assert not (tmp_path / "nan.h5").exists()


def test_edc_dagger_and_rded_init(edc, frames_file, tmp_path):
    rng = np.random.default_rng(0)
    with Frames(frames_file) as fr:
        src = np.concatenate([fr.class_ids("train", k)[:2] for k in range(K)])
    rded = CondensedSet(clips=rng.integers(0, 255, (K * 2, 4, SIZE + 8, SIZE + 8, 3), dtype=np.uint8),
                        labels=np.repeat(np.arange(K), 2), source_video=src)
    rded.write(tmp_path / "rded.h5")
    run, _ = edc("dagger", init="rded", class_wise=False, iterations=2, needs=["teacher"])
    ctx = _context(run.settings, frames_file, tmp_path / "w", init_path=tmp_path / "rded.h5")
    x, labels, sources = edc_mod.init_rded(ctx, 6)
    assert x.shape == (K * 2, 6, SIZE, SIZE, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert sources.tolist() == src.tolist()
    # 4 -> 6 frames by repetition: frames 0,0,1,2,2,3; centre crop offset 4
    np.testing.assert_allclose(x[0, 1].numpy(), rded.clips[0, 0, 4:4 + SIZE, 4:4 + SIZE] / 255, atol=1e-5)
    np.testing.assert_allclose(x[0, 5].numpy(), rded.clips[0, 3, 4:4 + SIZE, 4:4 + SIZE] / 255, atol=1e-5)
    cs = run(init_path=tmp_path / "rded.h5")                     # EDC-dagger reads no statistics
    assert cs.attrs["class_wise"] is False and cs.source_video.tolist() == src.tolist()


def test_stats_stage_cli_with_a_teacher_file(tmp_path):
    from vdc.__main__ import main

    frames = _frames(tmp_path / "f.h5")
    net = _tiny()
    torch.save({"arch": "minic3d", "num_classes": K, "model": {"width": 0.125, "dropout": 0.5},
                "state_dict": net.state_dict(), "settings": {}}, tmp_path / "t.pt")
    settings = {"dataset": {"name": "t", "clip_len": 4, "clip_interval": 4, "input_size": SIZE},
                "device": "cpu", "deterministic": True, "workdir": str(tmp_path / "w"), "arch": "minic3d"}
    rc = main(["stats", "--frames", str(frames), "--teacher", str(tmp_path / "t.pt"), "--out",
               str(tmp_path / "s.h5"), "--threads", "1", "--settings", json.dumps(settings)])
    assert rc == 0
    back = read_stats(tmp_path / "s.h5")
    with Frames(frames) as fr:
        direct = compute_stats(net, fr, 4, 4, SIZE)
    assert back.attrs["arch"] == "minic3d" and back.num_clips == 2 * K
    assert back.attrs["layers"] == ["features.1", "features.5", "features.9"]
    for name in direct.layers:
        np.testing.assert_allclose(back.layers[name].class_var, direct.layers[name].class_var, rtol=1e-5)


@pytest.mark.parametrize("arch", ["r2plus1d_r18", "i3d_r18", "slowonly_r18"])
def test_resnet_teachers_statistics_and_one_step(tmp_path, arch):
    """Every BatchNorm3d of the ResNet-18 video nets gets class statistics and a matching term."""
    frames = _frames(tmp_path / "f.h5", per_class=1, length=16)
    net = _tiny(arch, width=0.0625)
    with Frames(frames) as fr:
        stats = compute_stats(net, fr, clip_len=8, clip_interval=2, input_size=SIZE)
    assert list(stats.layers) == [n for n, _ in bn_layers(net)] and len(stats.layers) >= 17
    matcher = StatMatcher(net, stats, 10.0, 0.8, True)
    x = C.normalize_channels_last(torch.rand(3, 10, SIZE, SIZE, 3)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05, betas=(0.5, 0.9))
    step = StepSettings(t_c=10, clip_len=8, sampling="sliding", interpolation="none", size=SIZE, scale=(0.5, 1.0),
                        r_bn=0.01)
    before = x.detach().clone()
    out = edc_mod.edc_step(x, torch.tensor([0, 1, 2]), net, matcher, opt, 0.05, step, torch.Generator().manual_seed(0))
    assert float(out["bn"]) > 0 and torch.isfinite(out["loss"])
    assert not torch.equal(x.detach(), before) and len(matcher.ema) == len(stats.layers)
