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
from vdc.condense.edc_stats import compute_stats, draw_views
from vdc.condense.stage import run_condense
from vdc.condensed import CondensedSet
from vdc.config import stage_settings
from vdc.data import clips as C
from vdc.data.frames import Frames, write_frames
from vdc.accel import Accel
from vdc.errors import ConfigError, NonFiniteError
from vdc.formats.stats import (ConvStats, EDCStats, LayerStats, bn_layers, hooked_modules, patch_moments, read_stats,
                               write_stats)
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

def _hand_moments(z):
    """Per-sample channel and patch-tube moments of z [1, C, T, H, W], by hand: the input resized
    bilinearly to multiples of 16, tubes of 16 x 16 pixels through all frames."""
    h, w = z.shape[-2:]
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    r = torch.nn.functional.interpolate(z[0].reshape(1, -1, h, w), size=(hp, wp), mode="bilinear",
                                        align_corners=False).reshape(z.shape[1], z.shape[2], hp, wp)
    tubes = [r[:, :, i:i + 16, j:j + 16] for i in range(0, hp, 16) for j in range(0, wp, 16)]
    return (z.mean((0, 2, 3, 4)), z.var((0, 2, 3, 4), unbiased=False),
            torch.stack([t.mean() for t in tubes]), torch.stack([t.var(unbiased=False) for t in tubes]))


def test_stats_pass_reproduces_hand_computed_class_moments(tmp_path):
    """The centre view, by hand: BN and conv inputs, class and global targets, patch tubes; the file's
    round trip keeps every array under its name (no mean/variance swap)."""
    path = _frames(tmp_path / "f.h5")
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm3d(3), nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    _randomise_bn(net).eval()
    before = [m.running_mean.clone() for _, m in bn_layers(net)]
    with Frames(path) as fr:
        stats = compute_stats(net, fr, clip_len=4, clip_interval=4, input_size=SIZE, batch=4, view="centre")
        train = fr.split_ids("train")
        # by hand: length 16, 4 frames at interval 4 -> room 16 - 12 = 4, start 4 // 2 - 1 = 1 -> frames 1, 5, 9, 13
        inputs = {"0": [], "1": [], "2": []}
        labels = [int(fr.labels[v]) for v in train]
        for v in train:
            x = torch.from_numpy(fr.read_video(int(v))[[1, 5, 9, 13]]).float() / 255  # [T, H, W, 3]
            x = ((x - torch.tensor(C.MEAN)) / torch.tensor(C.STD)).permute(3, 0, 1, 2)[None]  # [1, 3, T, H, W]
            with torch.no_grad():
                inputs["0"].append(x)
                inputs["1"].append(net[0](x))
                inputs["2"].append(net[1](net[0](x)))
    assert stats.num_clips == len(train) == 2 * K and stats.attrs["view"] == "centre"
    assert list(stats.layers) == ["0", "1", "2"]
    assert [ls.kind for ls in stats.layers.values()] == ["bn", "conv", "bn"]
    lab = np.array(labels)
    for name in ("0", "1", "2"):
        ls = stats.layers[name]
        per = [_hand_moments(z) for z in inputs[name]]
        for k in range(K):
            sel = [p for p, y in zip(per, lab) if y == k]
            np.testing.assert_allclose(ls.class_mean[k], torch.stack([p[0] for p in sel]).mean(0), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(ls.class_var[k], torch.stack([p[1] for p in sel]).mean(0), rtol=1e-4, atol=1e-5)
            if ls.kind == "conv":
                np.testing.assert_allclose(ls.class_patch_mean[k], torch.stack([p[2] for p in sel]).mean(0),
                                           rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(ls.class_patch_var[k], torch.stack([p[3] for p in sel]).mean(0),
                                           rtol=1e-4, atol=1e-5)
        assert ls.counts.tolist() == [2] * K
    # the convolution's global targets: the statistics over all clips at once
    conv, allz = stats.layers["1"], torch.cat(inputs["1"])
    np.testing.assert_allclose(conv.mean, allz.mean((0, 2, 3, 4)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.var, allz.var((0, 2, 3, 4), unbiased=False), rtol=1e-4, atol=1e-5)
    tubes = allz.reshape(len(allz), 3, 4, 3, 16, 3, 16)             # 48 = 3 x 16: no resize
    np.testing.assert_allclose(conv.patch_mean, tubes.mean((0, 1, 2, 4, 6)).flatten(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.patch_var, tubes.var((0, 1, 2, 4, 6), unbiased=False).flatten(), rtol=1e-4,
                               atol=1e-5)
    assert conv.grid.tolist() == [3, 3] and conv.class_patch_mean.shape == (K, 9)
    np.testing.assert_allclose(stats.layers["2"].running_var, net[2].running_var.numpy())
    # the pass leaves the network's running statistics alone
    for b, (_, m) in zip(before, bn_layers(net)):
        assert torch.equal(b, m.running_mean)
    # round trip: every array under its own name
    stats.attrs.update(arch="custom")
    write_stats(stats, tmp_path / "s.h5")
    back = read_stats(tmp_path / "s.h5")
    assert back.num_clips == 2 * K and back.attrs["arch"] == "custom" and back.attrs["kinds"]["1"] == "conv"
    write_stats(stats, tmp_path / "again.h5")          # equal statistics, equal content identity
    assert content_id(tmp_path / "again.h5") == content_id(tmp_path / "s.h5")
    for name, ls in stats.layers.items():
        assert type(back.layers[name]) is type(ls)
        for key in ls.ARRAYS:
            np.testing.assert_array_equal(getattr(back.layers[name], key), getattr(ls, key))
    assert not np.allclose(back.layers["1"].class_patch_mean, back.layers["1"].class_patch_var)
    assert not np.allclose(back.layers["0"].class_mean, back.layers["0"].class_var)


def test_stats_pass_sees_the_training_augmentation_deterministically(tmp_path):
    """view train: a random window, crop and flip per clip (the teacher's augmentation), not the centre
    view; the same for a seed whatever the batch, other for another seed; equal to the statistics of the
    views drawn by hand from the same generator."""
    path = _frames(tmp_path / "f.h5", length=40)
    net = _tiny()
    with Frames(path) as fr:
        centre = compute_stats(net, fr, 4, 4, SIZE, view="centre")
        train = compute_stats(net, fr, 4, 4, SIZE, batch=5, scale=(0.3, 1.0))
        again = compute_stats(net, fr, 4, 4, SIZE, batch=2, scale=(0.3, 1.0))
        other = compute_stats(net, fr, 4, 4, SIZE, scale=(0.3, 1.0), seed=1)
        vids = fr.split_ids("train")
        labels = torch.as_tensor(fr.labels[vids])
        g = torch.Generator().manual_seed(0)
        idx, boxes, flipped, ylab = draw_views(torch.as_tensor(fr.lengths[vids]), labels, fr.frame_shape[:2], 4, 4,
                                               "train", (0.3, 1.0), (3 / 4, 4 / 3), C.HFlip("on"), g)
        raw = torch.from_numpy(np.stack([fr.read_frames(int(v), i.tolist()) for v, i in zip(vids, idx)]))
    x = C.normalize(C.crop_resize(raw, boxes, SIZE, flipped))
    assert train.attrs["view"] == "train" and flipped.any() and not flipped.all()
    with torch.no_grad():
        z = net.features[:5](x)                           # input of "features.5"
    m = z.mean((2, 3, 4))
    for k in range(K):
        np.testing.assert_allclose(train.layers["features.5"].class_mean[k], m[ylab == k].mean(0), rtol=1e-4,
                                   atol=1e-5)
    for name, ls in train.layers.items():
        for key in ls.ARRAYS:
            np.testing.assert_array_equal(getattr(again.layers[name], key), getattr(ls, key))
    assert not np.allclose(train.layers["features.1"].class_mean, centre.layers["features.1"].class_mean)
    assert not np.allclose(train.layers["features.1"].class_mean, other.layers["features.1"].class_mean)


def test_stats_pass_flip_off_never_flips_and_map_counts_the_partner_class(tmp_path):
    path = _frames(tmp_path / "f.h5")
    net = _tiny()
    lengths, labels = torch.full((200,), 16), torch.arange(200) % K
    for mode, table in (("off", None), ("map", torch.tensor([1, 0, 2]))):
        hf = C.HFlip(mode, table)
        _, _, flipped, ylab = draw_views(lengths, labels, (SIZE, SIZE), 4, 4, "train", (0.5, 1), (0.75, 4 / 3), hf,
                                         torch.Generator().manual_seed(0))
        if mode == "off":
            assert not flipped.any() and torch.equal(ylab, labels)
        else:   # flipped clips of classes 0 and 1 count for the other one; class 2 has no partner
            assert flipped.any()
            assert torch.equal(ylab, torch.where(flipped, table[labels], labels))
            assert (ylab[flipped & (labels == 0)] == 1).all() and (ylab[labels == 2] == 2).all()
    with Frames(path) as fr:
        off = compute_stats(net, fr, 4, 4, SIZE, hflip=C.HFlip("off"))
        on = compute_stats(net, fr, 4, 4, SIZE)
        mapped = compute_stats(net, fr, 4, 4, SIZE, hflip=C.HFlip("map", torch.tensor([1, 0, 2])))
    assert off.attrs["hflip"] == "off" and not np.allclose(off.layers["features.1"].class_mean,
                                                            on.layers["features.1"].class_mean)
    assert mapped.layers["features.1"].counts.sum() == 2 * K
    assert mapped.layers["features.1"].counts[2] == 2          # class 2 keeps its clips


def test_bf16_statistics_are_float32(tmp_path):
    """Under bf16 autocast (here on the CPU) module inputs are bf16; the statistics are taken in float32
    and stay close to the float32 pass."""
    from vdc.accel import Accel

    path = _frames(tmp_path / "f.h5")
    net = _tiny()
    with Frames(path) as fr:
        f32 = compute_stats(net, fr, 4, 4, SIZE)
        bf16 = compute_stats(net, fr, 4, 4, SIZE, accel=Accel(torch.device("cpu"), bf16=True))
    for name, ls in f32.layers.items():
        assert bf16.layers[name].class_mean.dtype == np.float32
        np.testing.assert_allclose(bf16.layers[name].class_mean, ls.class_mean, rtol=0.1, atol=0.05)


# ------------------------------------------------------------------------------ matching loss and EMA

def _stats_at(net, x):
    """Statistics whose every target equals the statistics of the batch x at the network's matched
    modules (BatchNorm running statistics settled to the batch first, layer by layer)."""
    def moments():
        out = {}
        hs = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, i[0].detach()))
              for n, m, _ in hooked_modules(net, "bn_conv")]
        with torch.no_grad():
            net(x)
        for h in hs:
            h.remove()
        return out

    for _ in bn_layers(net):  # layer l's input depends on the BN layers before it: settle them in order
        z = moments()
        for n, m in bn_layers(net):
            m.running_mean.copy_(z[n].mean((0, 2, 3, 4)))
            m.running_var.copy_(z[n].var((0, 2, 3, 4), unbiased=False))
    z, layers = moments(), {}
    for n, m, kind in hooked_modules(net, "bn_conv"):
        mean, var = z[n].mean((0, 2, 3, 4)).numpy(), z[n].var((0, 2, 3, 4), unbiased=False).numpy()
        tile = lambda a: np.tile(a, (K, 1))  # noqa: E731
        if kind == "bn":
            layers[n] = LayerStats(class_mean=tile(mean), class_var=tile(var), counts=np.ones(K, np.int64),
                                   running_mean=mean, running_var=var)
            continue
        pm, pv, grid = (t.numpy() if torch.is_tensor(t) else t for t in patch_moments(z[n], per_sample=False))
        layers[n] = ConvStats(class_mean=tile(mean), class_var=tile(var), counts=np.ones(K, np.int64), mean=mean,
                              var=var, class_patch_mean=tile(pm), class_patch_var=tile(pv), patch_mean=pm,
                              patch_var=pv, grid=np.asarray(grid))
    return EDCStats(layers=layers, attrs={"num_clips": K})


def _loss(net, stats, x, y, weight=10.0, class_wise=True, match="bn_conv"):
    matcher = StatMatcher(net, stats, weight, 0.8, class_wise, match)
    matcher.labels = y
    net(x)
    out = matcher.loss()
    matcher.remove()
    return out


def test_matching_loss_zero_at_targets_positive_otherwise_and_reaches_clips():
    net = _tiny()
    x = torch.randn(4, 3, 8, SIZE, SIZE)
    y = torch.tensor([0, 1, 1, 2])
    stats = _stats_at(net, x)
    for class_wise in (True, False):
        for match in ("bn", "bn_conv"):
            assert float(_loss(net, stats, x, y, class_wise=class_wise, match=match).detach()) == \
                pytest.approx(0.0, abs=1e-4)
    # move one class target: the class-wise term becomes positive and its gradient reaches the clips
    stats.layers["features.5"].class_mean[1] += 1.0
    xg = x.clone().requires_grad_(True)
    loss = _loss(net, stats, xg, y)
    assert float(loss.detach()) > 0.1
    loss.backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0


def test_conv_inputs_matched_and_the_x10_on_the_first_hooked_module():
    """match_modules bn_conv hooks every Conv3d too (the reference's ConvFeatureHook): a patch target of
    the stem convolution (whose input is the clip) counts, weighted by first_layer_weight; under bn
    the convolutions are not matched and the x10 goes to the first BatchNorm."""
    net = _tiny()
    assert [n for n, _, _ in hooked_modules(net, "bn_conv")] == \
        ["features.0", "features.1", "features.4", "features.5", "features.8", "features.9"]
    assert [n for n, _, _ in hooked_modules(net, "bn")] == ["features.1", "features.5", "features.9"]
    assert StatMatcher(net, _stats_at(net, torch.randn(2, 3, 8, SIZE, SIZE)), 10.0).weight == \
        {"features.0": 10.0, "features.1": 1.0, "features.4": 1.0, "features.5": 1.0, "features.8": 1.0,
         "features.9": 1.0}
    x = torch.randn(4, 3, 8, SIZE, SIZE)
    y = torch.tensor([0, 1, 1, 2])
    stats = _stats_at(net, x)
    p = stats.layers["features.0"].class_patch_mean.shape[1]          # 48 x 48 input: 3 x 3 patches
    assert p == 9
    stats.layers["features.0"].class_patch_mean += 1.0                 # every class, every patch: +1
    # d = 1/2 ||class patch mean - batch patch mean|| = 1/2 sqrt(P), times the weight of the first module
    for weight in (10.0, 1.0):
        assert float(_loss(net, stats, x, y, weight).detach()) == pytest.approx(weight * 0.5 * np.sqrt(p), rel=1e-4)
    assert float(_loss(net, stats, x, y, match="bn").detach()) == pytest.approx(0.0, abs=1e-4)
    # global conv target of the stem (its channel variance): the same weighting
    stats = _stats_at(net, x)
    stats.layers["features.0"].var += 2.0
    assert float(_loss(net, stats, x, y, class_wise=False).detach()) == pytest.approx(10 * 0.5 * 2 * np.sqrt(3),
                                                                                     rel=1e-4)
    # under bn the first BatchNorm takes the x10
    stats = _stats_at(net, x)
    stats.layers["features.1"].class_mean += 1.0
    c = stats.layers["features.1"].class_mean.shape[1]
    for match in ("bn", "bn_conv"):
        want = (10.0 if match == "bn" else 1.0) * 0.5 * np.sqrt(c)
        assert float(_loss(net, stats, x, y, match=match).detach()) == pytest.approx(want, rel=1e-4)


def test_r2plus1d_matcher_weights_the_stem_spatial_conv():
    net = _tiny("r2plus1d_r18", width=0.0625)
    names = [n for n, _, _ in hooked_modules(net, "bn_conv")]
    assert names[:4] == ["conv1.conv_s", "conv1.bn_s", "conv1.conv_t", "bn1"]
    assert "layer2.0.downsample.0.conv_s" in names            # the factorised shortcut's convolutions
    stats = _stats_at(net, torch.randn(2, 3, 8, SIZE, SIZE))
    m = StatMatcher(net, stats, 10.0)
    assert m.weight["conv1.conv_s"] == 10.0 and sum(m.weight.values()) == 10.0 + len(names) - 1
    m.remove()


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
    resumed = run()
    np.testing.assert_array_equal(resumed.clips, full.clips)
    assert not folder.exists()
    # the history (one row per iteration of both chunks) survives the kill too
    assert set(full.history) == {"loss", "ce", "bn", "network", "chunk"} and len(full.history["loss"]) == 10
    for k in full.history:
        np.testing.assert_array_equal(resumed.history[k], full.history[k])


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
    run, _ = edc("nan", class_wise=False, match_modules="bn")
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
    run, _ = edc("dagger", init="rded", class_wise=False, iterations=2, needs=["teacher"], match_modules="bn")
    ctx = _context(run.settings, frames_file, tmp_path / "w", init_path=tmp_path / "rded.h5")
    x, labels, sources = edc_mod.init_rded(ctx, 6)
    assert x.shape == (K * 2, 6, SIZE, SIZE, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert sources.tolist() == src.tolist()
    # 4 -> 6 frames by repetition: frames 0,0,1,2,2,3; centre crop offset 4
    np.testing.assert_allclose(x[0, 1].numpy(), rded.clips[0, 0, 4:4 + SIZE, 4:4 + SIZE] / 255, atol=1e-5)
    np.testing.assert_allclose(x[0, 5].numpy(), rded.clips[0, 3, 4:4 + SIZE, 4:4 + SIZE] / 255, atol=1e-5)
    cs = run(init_path=tmp_path / "rded.h5")                     # EDC-dagger on BN inputs reads no statistics
    assert cs.attrs["class_wise"] is False and cs.source_video.tolist() == src.tolist()
    # matching convolution inputs needs the statistics file (their global targets), even without class terms
    run, _ = edc("dagger_conv", init="rded", class_wise=False, iterations=2, needs=["teacher"])
    ctx = _context(run.settings, frames_file, tmp_path / "w2")
    with pytest.raises(ConfigError, match="match_modules: bn_conv"):
        edc_mod.condensation_networks(ctx, ["minic3d"], False, "bn_conv", Accel(torch.device("cpu")))


def test_stats_stage_cli_with_a_teacher_file(tmp_path, tiny_config, frames_file):
    """python -m vdc stats: the training view with the teacher's crop range and the dataset's flip, seed 0."""
    from vdc.__main__ import main

    net = _tiny()
    torch.save({"arch": "minic3d", "num_classes": K, "model": {"width": 0.125, "dropout": 0.5},
                "state_dict": net.state_dict(), "settings": {}}, tmp_path / "t.pt")
    cfg = tiny_config(teacher={"scale": [0.4, 1.0]}, datasets={"tiny": {"hflip": "off"}})
    settings = stage_settings(cfg, "stats", "tiny", arch="minic3d")
    rc = main(["stats", "--frames", str(frames_file), "--teacher", str(tmp_path / "t.pt"), "--out",
               str(tmp_path / "s.h5"), "--threads", "1", "--settings", json.dumps(settings)])
    assert rc == 0
    back = read_stats(tmp_path / "s.h5")
    with Frames(frames_file) as fr:
        direct = compute_stats(net, fr, 8, 8, SIZE, scale=(0.4, 1.0), hflip=C.HFlip("off"))
    assert back.attrs["arch"] == "minic3d" and back.num_clips == 3 * K and back.attrs["view"] == "train"
    assert back.attrs["hflip"] == "off" and back.attrs["scale"] == [0.4, 1.0]
    assert back.attrs["layers"] == ["features.0", "features.1", "features.4", "features.5", "features.8", "features.9"]
    for name in direct.layers:
        np.testing.assert_allclose(back.layers[name].class_var, direct.layers[name].class_var, rtol=1e-5)


@pytest.mark.parametrize("arch", ["r2plus1d_r18", "i3d_r18", "slowonly_r18"])
def test_resnet_teachers_statistics_and_one_step(tmp_path, arch):
    """Every BatchNorm3d of the ResNet-18 video nets gets class statistics and a matching term."""
    frames = _frames(tmp_path / "f.h5", per_class=1, length=16)
    net = _tiny(arch, width=0.0625)
    with Frames(frames) as fr:
        stats = compute_stats(net, fr, clip_len=8, clip_interval=2, input_size=SIZE)
    assert list(stats.layers) == [n for n, _, _ in hooked_modules(net)] and len(bn_layers(net)) >= 17
    matcher = StatMatcher(net, stats, 10.0, 0.8, True)
    x = C.normalize_channels_last(torch.rand(3, 10, SIZE, SIZE, 3)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05, betas=(0.5, 0.9))
    step = StepSettings(t_c=10, clip_len=8, sampling="sliding", interpolation="none", size=SIZE, scale=(0.5, 1.0),
                        r_bn=0.01)
    before = x.detach().clone()
    out = edc_mod.edc_step(x, torch.tensor([0, 1, 2]), net, matcher, opt, 0.05, step, torch.Generator().manual_seed(0))
    assert float(out["bn"]) > 0 and torch.isfinite(out["loss"])
    assert not torch.equal(x.detach(), before) and len(matcher.ema) == len(stats.layers)
    assert all(len(matcher.ema[n]) == (4 if ls.kind == "conv" else 2) for n, ls in stats.layers.items())


def test_edc_view_flip_off_never_flips_and_map_relabels_the_view():
    """The dataset's flip in EDC's view: off never flips; under map a flipped view of class y is trained
    as the paired class (cross-entropy and class-wise targets)."""
    net = _tiny()
    stats = _stats_at(net, torch.randn(2, 3, 8, SIZE, SIZE))
    x = C.normalize_channels_last(torch.rand(6, 8, SIZE, SIZE, 3)).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    table = torch.tensor([1, 0, 2])
    for mode in ("off", "on", "map"):
        hf = C.HFlip(mode, table if mode == "map" else None)
        step = StepSettings(t_c=8, clip_len=8, sampling="naive", interpolation="none", size=SIZE, scale=(0.5, 1.0),
                            r_bn=0.01, hflip=hf)
        _, flipped = edc_mod.make_view(x.detach(), 8, 8, "naive", "none", SIZE, (0.5, 1.0),
                                       torch.Generator().manual_seed(4), hf)
        assert flipped.any() == (mode != "off")
        matcher = StatMatcher(net, stats, 10.0)
        opt = torch.optim.Adam([x], lr=0.0)
        edc_mod.edc_step(x, y, net, matcher, opt, 0.0, step, torch.Generator().manual_seed(4))
        want = torch.where(flipped, table[y], y) if mode == "map" else y
        assert torch.equal(matcher.labels, want)
        matcher.remove()


def test_patch_resize_is_bilinear_and_memory_light():
    """The patch resize equals F.interpolate(bilinear, align_corners=False) (done as two matrix products,
    deterministic on the GPU); with a gradient the resized tensor is recomputed, not kept."""
    from vdc.formats.stats import patch_tubes

    z = torch.randn(2, 3, 2, 12, 20, dtype=torch.float64)
    want = torch.nn.functional.interpolate(z.reshape(2, 6, 12, 20), size=(16, 32), mode="bilinear",
                                           align_corners=False).reshape(2, 3, 2, 1, 16, 2, 16)
    torch.testing.assert_close(patch_tubes(z.float()).double(), want, atol=1e-5, rtol=1e-5)
    zg = torch.randn(4, 8, 4, 4, 4, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        pm, pv, grid = patch_moments(zg, per_sample=False)
    assert grid == (1, 1) and max(saved) <= zg.numel()          # nothing of 16 x 16 kept
    (pm.sum() + pv.sum()).backward()
    zr = zg.detach().clone().requires_grad_(True)
    tubes = patch_tubes(zr)
    (tubes.mean((0, 1, 2, 4, 6)).sum() + tubes.var((0, 1, 2, 4, 6), unbiased=False).sum()).backward()
    torch.testing.assert_close(zg.grad, zr.grad)
