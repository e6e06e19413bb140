"""Horizontal flip per dataset, wired: the teacher's and experts' training views (loop.train_views /
train_batch), the evaluation's student views and their labels / targets (evaluate.Protocol)."""
import numpy as np
import pytest
import torch

import vdc.evaluate as E
from vdc.condensed import CondensedSet
from vdc.config import stage_settings
from vdc.data import clips as C
from vdc.data.frames import Frames, load_bank
from vdc.errors import ConfigError
from vdc.train import loop
from vdc.train.teacher import train_teacher

torch.set_num_threads(1)


def dataset(tiny_config, **keys):
    return stage_settings(tiny_config(datasets={"tiny": keys}), "teacher", "tiny", arch="minic3d")


def test_train_views_map_labels_of_flipped_clips_only(frames_file, tiny_config):
    ds = dataset(tiny_config, hflip="map", hflip_pairs=[["class0", "class1"]])["dataset"]
    with Frames(frames_file) as fr:
        bank = load_bank(fr, "train", "cpu")
        hf = C.HFlip.of(ds, fr.classes)
        videos = torch.arange(len(bank)).repeat(8)
        x, y = loop.train_views(bank, videos, ds, torch.Generator().manual_seed(0), hf)
        flipped = C.HFlip("on").draw(len(videos), _after_windows_and_boxes(bank, videos, ds))
        truth = bank.labels[videos]
        assert torch.equal(y != truth, flipped & (truth < 2))          # class 2 is in no pair
        assert torch.equal(y[flipped & (truth < 2)], 1 - truth[flipped & (truth < 2)])
        # the same views as the flip-on path: only the labels differ
        x_on = loop.train_batch(bank, videos, dict(ds, hflip="on", hflip_pairs=[]), torch.Generator().manual_seed(0))
        assert torch.equal(x, x_on)
        with pytest.raises(ValueError, match="use train_views"):
            loop.train_batch(bank, videos, ds, torch.Generator().manual_seed(0), hflip=hf)
        with pytest.raises(ValueError, match="dataset whose hflip is 'off'"):
            loop.train_batch(bank, videos, dict(ds, hflip="off"), torch.Generator().manual_seed(0))
        off = loop.train_batch(bank, videos, dict(ds, hflip="off"), torch.Generator().manual_seed(0), hflip=C.HFlip("off"))
        assert not torch.equal(off, x) and torch.equal(off[~flipped], x[~flipped])


def _after_windows_and_boxes(bank, videos, ds):
    """A generator advanced past train_views' window and crop draws (its next draws are the flips)."""
    g = torch.Generator().manual_seed(0)
    C.train_frame_indices(bank.lengths[videos], ds["clip_len"], ds["clip_interval"], g)
    h, w = bank.frames.shape[1:3]
    C.sample_resized_crop_boxes(len(videos), h, w, generator=g)
    return g


def test_teacher_reads_the_datasets_flip(frames_file, tiny_config, tmp_path):
    settings = dataset(tiny_config, hflip="map")  # a map without pairs
    settings["teacher"].update(epochs=1, batch=4)
    with pytest.raises(ConfigError, match="datasets.tiny.hflip_pairs: hflip 'map' needs at least one pair"):
        train_teacher(frames_file, tmp_path / "t.pt", tmp_path / "t.json", settings)


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_evaluation_labels_follow_the_flip(labels, monkeypatch):
    """Hard labels of flipped clips of paired classes become the paired class; fixed soft targets of
    flipped clips get the pair's columns swapped; unflipped clips and unpaired classes are untouched."""
    rng = np.random.default_rng(0)
    cs = CondensedSet(clips=rng.integers(0, 255, (6, 8, 20, 20, 3), dtype=np.uint8), labels=np.array([0, 1, 2, 0, 1, 2]),
                      attrs={"t_c": 8, "sampling": "naive", "interpolation": "none"})
    hf = C.HFlip("map", torch.tensor([1, 0, 2]))
    data = E.CondensedClips(cs, {"clip_len": 8, "input_size": 16}, (0.08, 1.0), (0.75, 1.33), "cpu", hf)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 16 * 16, 3))
    soft = torch.randn(6, 3)
    ev = {"labels": labels, "loss": "ce" if labels == "hard" else "msegt", "cutmix": False, "mse_gt_lambda": 0.1}
    seen = {}

    def spy_ce(s, y, perm=None, lam=1.0):
        seen["y"] = y
        return torch.nn.functional.cross_entropy(s, y)

    def spy_mse(s, t, ce, lam):
        seen["t"] = t
        return (s - t).square().mean() + lam * ce
    monkeypatch.setattr(E, "hard_ce", spy_ce)
    monkeypatch.setattr(E, "msegt_loss", spy_mse)
    proto = E.Protocol(student, torch.optim.SGD(student.parameters(), lr=0.0), data, ev,
                       soft=soft if labels == "soft" else None)
    idx = torch.arange(6)
    for seed in range(4):
        proto.step(idx, torch.Generator().manual_seed(seed))
        _, flipped = data.train_views(idx, torch.Generator().manual_seed(seed))
        y = torch.as_tensor(cs.labels)
        paired = flipped & (y < 2)
        assert torch.equal(seen["y"] != y, paired) and torch.equal(seen["y"][paired], 1 - y[paired])
        if labels == "soft":
            assert torch.equal(seen["t"][~flipped], soft[~flipped])
            assert torch.equal(seen["t"][flipped], soft[flipped][:, [1, 0, 2]])
