"""The frames file, video banks and the condensed-set file (vdc/data/frames.py, vdc/condensed.py)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from vdc.condensed import CondensedSet
from vdc.data.frames import Frames, load_bank, write_frames


def _videos(rng, n, h=6, w=5):
    return [rng.integers(0, 255, (int(rng.integers(3, 9)), h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_frames_round_trip_and_split_order(tmp_path):
    rng = np.random.default_rng(0)
    vids = _videos(rng, 6)
    splits = [1, 0, 1, 0, 0, -1]
    write_frames(tmp_path / "f.h5", vids, labels=[0, 1, 0, 1, 0, 1], splits=splits, classes=["a", "b"])
    with Frames(tmp_path / "f.h5") as fr:
        assert fr.num_classes == 2 and fr.classes == ["a", "b"]
        assert list(fr.split) == [0, 0, 0, 1, 1, -1]  # train first, then test
        order = [1, 3, 4, 0, 2, 5]
        for vid, src in enumerate(order):
            np.testing.assert_array_equal(fr.read_video(vid), vids[src])
        np.testing.assert_array_equal(fr.read_frames(0, [2, 0, 2]), vids[1][[2, 0, 2]])
        bank = load_bank(fr, "train", "cpu")
        assert len(bank) == 3 and bank.ids.tolist() == [0, 1, 2]
        clip = bank.gather(torch.tensor([1]), torch.tensor([[0, 1]]))
        np.testing.assert_array_equal(clip[0].numpy(), vids[3][[0, 1]])
        streamed = load_bank(fr, "test", "cpu", max_bytes=0)
        mem = load_bank(fr, "test", "cpu")
        idx = torch.tensor([[0, 2], [1, 1]])
        assert torch.equal(streamed.gather(torch.tensor([0, 1]), idx), mem.gather(torch.tensor([0, 1]), idx))


def test_condensed_set_round_trip(tmp_path):
    clips = np.random.default_rng(1).random((4, 3, 5, 5, 3)).astype(np.float32)
    cs = CondensedSet(clips=clips, labels=[0, 0, 1, 1], label_logits=np.eye(2)[[0, 0, 1, 1]],
                      attrs={"method": "x", "ipc": 2, "settings": {"lr": 0.1}})
    cs.write(tmp_path / "c.h5")
    back = CondensedSet.read(tmp_path / "c.h5")
    assert back.value_range == "unit_float" and back.attrs["settings"] == {"lr": 0.1}
    assert back.attrs["t_c"] == 3 and back.attrs["ipc"] == 2
    np.testing.assert_allclose(back.clips, clips, atol=1e-3)  # float16 storage
    np.testing.assert_array_equal(back.source_video, [-1] * 4)
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


def test_condensed_set_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        CondensedSet(clips=np.zeros((2, 1, 2, 2, 3), np.uint8), labels=[0])
    with pytest.raises(FileNotFoundError, match="condense"):
        CondensedSet.read(tmp_path / "missing.h5")


def test_every_stage_has_a_command_line():
    """Each stage of python -m vdc imports, builds its parser and answers --help; an unknown stage is refused."""
    import argparse
    import importlib

    from vdc.__main__ import STAGES

    for stage, (module, _) in STAGES.items():
        mod = importlib.import_module(module)
        parser = argparse.ArgumentParser()
        mod.add_arguments(parser)
        assert callable(mod.main), stage
    out = subprocess.run([sys.executable, "-m", "vdc", "evaluate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--condensed" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vdc", "nosuchstage"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
