"""The frames file, video banks and the condensed-set file (vdc/data/frames.py, vdc/condensed.py)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from vdc.condensed import CondensedSet
from vdc.errors import InputError
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


def test_frames_content_id(tmp_path):
    """write_frames stores the content id of the frames and index it wrote: equal for equal data,
    different when one pixel or one label differs; vdc.resume.content_id reads it."""
    import h5py

    from vdc.resume import content_id

    rng = np.random.default_rng(0)
    vids = _videos(rng, 4)

    def write(name, videos, labels=(0, 1, 0, 1)):
        write_frames(tmp_path / name, videos, labels=list(labels), splits=[0, 0, 1, 1], classes=["a", "b"])
        with h5py.File(tmp_path / name) as h5:
            return h5.attrs["content_id"]

    changed = [v.copy() for v in vids]
    changed[2][1, 3, 2, 0] ^= 1
    same = write("a.h5", vids)
    assert same == write("b.h5", [v.copy() for v in vids])
    assert len({same, write("c.h5", changed), write("d.h5", vids, labels=(0, 1, 1, 1))}) == 3
    assert content_id(tmp_path / "a.h5") == f"h5:{same}"


def test_truncated_or_foreign_frames_files_are_named_with_the_fix(tmp_path, frames_file):
    """Frames() reports a truncated copy, a file without /videos or /frames, and a missing file as
    an InputError naming the file and saying to rerun extract."""
    import h5py

    data = frames_file.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.h5: cannot read this frames file .*truncated.* rerun the extract stage"):
        Frames(tmp_path / "cut.h5")
    for missing in ("frames", "videos"):
        with h5py.File(frames_file) as src, h5py.File(tmp_path / f"no_{missing}.h5", "w") as dst:
            for key in src:
                if key != missing:
                    src.copy(key, dst)
        with pytest.raises(InputError, match=rf"no_{missing}\.h5: not a frames file \(no /{missing}.*\); rerun the extract"):
            Frames(tmp_path / f"no_{missing}.h5")
    with pytest.raises(InputError, match=r"absent\.h5: frames file not found; rerun the extract stage"):
        Frames(tmp_path / "absent.h5")


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
    assert back.history is None
    cs.history = {"loss": np.array([3.0, 2.5]), "alpha": np.array([0.01, 0.011])}
    cs.write(tmp_path / "h.h5")
    np.testing.assert_array_equal(CondensedSet.read(tmp_path / "h.h5").history["loss"], [3.0, 2.5])
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


def test_condensed_set_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        CondensedSet(clips=np.zeros((2, 1, 2, 2, 3), np.uint8), labels=[0])
    with pytest.raises(InputError, match="missing.h5: condensed set not found; rerun its condense job"):
        CondensedSet.read(tmp_path / "missing.h5")


def test_truncated_or_foreign_files_are_named_with_the_fix(tmp_path):
    cs = CondensedSet(clips=np.zeros((2, 8, 6, 6, 3), np.uint8), labels=[0, 1])
    cs.write(tmp_path / "c.h5")
    data = (tmp_path / "c.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.h5: cannot read this condensed set .*rerun its condense job"):
        CondensedSet.read(tmp_path / "cut.h5")
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1]
    with pytest.raises(InputError, match=r"other.h5: not a condensed set \(no /clips\)"):
        CondensedSet.read(tmp_path / "other.h5")


def test_equal_sets_have_equal_content_ids(tmp_path):
    import h5py

    from vdc.resume import content_id

    def write(name, value):
        CondensedSet(clips=np.full((2, 8, 6, 6, 3), value, np.uint8), labels=[0, 1], attrs={"seed": 0}).write(tmp_path / name)
        with h5py.File(tmp_path / name) as h5:
            return h5.attrs["content_id"]

    assert write("a.h5", 3) == write("b.h5", 3) != write("c.h5", 4)
    assert content_id(tmp_path / "a.h5") == content_id(tmp_path / "b.h5")


def test_a_user_error_is_one_or_two_lines_and_exit_code_2(tmp_path, tiny_config):
    """python -m vdc prints a user error (here a truncated condensed set) without a traceback, naming the file."""
    import json

    from vdc.config import stage_settings

    settings = stage_settings(tiny_config(), "evaluate", "tiny", arch="minic3d", labels="hard", loss="ce",
                              cutmix="nocutmix", seed=0)
    (tmp_path / "cut.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    res = subprocess.run([sys.executable, "-m", "vdc", "evaluate", "--condensed", str(tmp_path / "cut.h5"),
                          "--frames", str(tmp_path / "f.h5"), "--out", str(tmp_path / "r.json"),
                          "--settings", json.dumps(settings)], capture_output=True, text=True)
    err = [line for line in res.stderr.splitlines() if line.startswith("vdc evaluate: error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(err) == 1 and "cut.h5" in err[0] and "condense" in err[0]


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
