"""Frames banks (vdc/data/frames.py): stored-frame clips equal the reference's source-frame clips,
nearest-frame mapping for thinned storage, streamed == in-memory, parallel reads, the memory limit."""
import h5py
import numpy as np
import pytest
import torch

from vdc.data import clips as C
from vdc.data.frames import Frames, StreamedVideoBank, bank_limit, load_bank, nearest_rows, write_frames

from test_clips import reference_clip, reference_starts


def numbered(n: int, size=(2, 3)) -> np.ndarray:
    """A video whose frame k encodes k in its pixels (k % 256, k // 256, 7)."""
    k = np.arange(n)
    px = np.stack([k % 256, k // 256, np.full(n, 7)], 1).astype(np.uint8)
    return np.broadcast_to(px[:, None, None, :], (n, *size, 3)).copy()


def frame_numbers(clips: torch.Tensor) -> torch.Tensor:
    """The frame numbers encoded by :func:`numbered` in uint8 clips [B, T, H, W, 3]."""
    c = clips[:, :, 0, 0].long()
    return c[..., 0] + 256 * c[..., 1]


@pytest.fixture(scope="module")
def every_length(tmp_path_factory):
    """A frames file with one training video of every length 1..400, every frame stored."""
    path = tmp_path_factory.mktemp("bank") / "all.h5"
    write_frames(path, [numbered(n) for n in range(1, 401)], [0] * 400, [0] * 400, ["c"])
    return path


@pytest.mark.parametrize("t", [8, 16])
def test_stored_clips_are_the_references_source_clips(every_length, t):
    """Through the frames file and the bank (in memory and streamed), every training window (all
    starts) and the centre clip of every length 1..400 hold exactly the reference's source frames."""
    with Frames(every_length) as fr:
        assert fr.exact and fr.lengths.tolist() == list(range(1, 401))
        banks = [load_bank(fr, "train", "cpu"), StreamedVideoBank(fr, fr.split_ids("train"), "cpu")]
        for bank in banks:
            assert bank.lengths.tolist() == list(range(1, 401))
            got = frame_numbers(bank.gather(torch.arange(400), C.center_frame_indices(bank.lengths, t, 8)))
            for L in range(1, 401):
                want = reference_clip(L, t, 8)
                shift = 1 if want[0] < 0 else 0  # L = t or 1: the reference's start names img_00000.jpg
                assert got[L - 1].tolist() == [i + shift for i in want]
            for L in (1, 7, 8, 29, 63, 64, 100, 187, 400):
                starts = reference_starts(L, t, 8)
                pos = torch.full((len(starts),), L - 1)
                idx = C.window_indices(bank.lengths[pos], torch.arange(len(starts)), t, 8)
                want = [reference_clip(L, t, 8, s) for s in starts]
                assert frame_numbers(bank.gather(pos, idx)).tolist() == want
        # a 29-frame video: 8 distinct stored frames in every training clip
        g = torch.Generator().manual_seed(0)
        pos = torch.full((200,), 28)
        clips = frame_numbers(banks[0].gather(pos, C.train_frame_indices(banks[0].lengths[pos], 8, 8, g)))
        assert all(len(set(r)) == 8 for r in clips.tolist())


def thinned(tmp_path, stride=3):
    """A file keeping every ``stride``-th source frame of videos of 10..59 frames."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 60, 8)
    sources = [np.arange(0, n, stride) for n in lengths]
    videos = [numbered(n)[s] for n, s in zip(lengths, sources)]
    write_frames(tmp_path / "thin.h5", videos, [0, 1] * 4, [0] * 6 + [1] * 2, ["a", "b"], sources=sources,
                 source_frames=lengths)
    return tmp_path / "thin.h5", lengths


def test_thinned_storage_maps_to_the_nearest_stored_frame(tmp_path):
    path, lengths = thinned(tmp_path)
    with Frames(path) as fr:
        assert not fr.exact and fr.attrs["exact_clips"] == 0
        assert fr.lengths.tolist() == lengths.tolist() and fr.stored_lengths.tolist() == [-(-n // 3) for n in lengths]
        ids = fr.split_ids("train")
        mem, streamed = load_bank(fr, "train", "cpu"), StreamedVideoBank(fr, ids, "cpu")
        assert mem.lengths.tolist() == fr.lengths[ids].tolist()
        g = torch.Generator().manual_seed(0)
        videos = torch.randint(len(ids), (64,), generator=g)
        idx = C.train_frame_indices(mem.lengths[videos], 8, 8, g)
        got = frame_numbers(mem.gather(videos, idx))
        assert torch.equal(got, frame_numbers(streamed.gather(videos, idx)))
        # nearest multiple of 3 below the video's last kept frame, ties to the earlier
        last = torch.as_tensor(((fr.lengths[ids] - 1) // 3) * 3)[videos].unsqueeze(1)
        want = torch.minimum(((idx + 1) // 3) * 3, last)
        assert torch.equal(got, want)
        v = int(ids[2])
        assert frame_numbers(torch.from_numpy(fr.read_frames(v, [0, 1, 2, 4, 5]))[None]).tolist() == [[0, 0, 3, 3, 6]]
    assert nearest_rows(np.array([0, 3, 6]), np.array([0, 1, 2, 4, 5, 8, 99])).tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_streamed_reads_equal_memory_reads_in_any_order(tmp_path, frames_file):
    with Frames(frames_file) as fr:
        rows = np.random.default_rng(0).integers(0, int(fr.stored_lengths.sum()), (40, 8))
        with h5py.File(frames_file) as h5:
            want = h5["frames"][:][rows]
        assert np.array_equal(fr.read_rows(rows), want)
        assert np.array_equal(fr.read_rows(np.sort(rows.ravel())), want.reshape(-1, *want.shape[2:])[np.argsort(rows.ravel(), kind="stable")])
    # a chunked copy (no raw offset): read through h5py, same frames
    chunked = tmp_path / "chunked.h5"
    with h5py.File(frames_file) as src, h5py.File(chunked, "w") as dst:
        for key in src:
            src.copy(key, dst)
        del dst["frames"]
        dst.create_dataset("frames", data=src["frames"][:], chunks=(4, *src["frames"].shape[1:]))
        dst.attrs.update(src.attrs)
    with Frames(chunked) as fr:
        assert fr._raw_offset is None
        assert np.array_equal(fr.read_rows(rows), want)
        bank = load_bank(fr, "train", "cpu")
        with Frames(frames_file) as ref:
            assert torch.equal(bank.frames, load_bank(ref, "train", "cpu").frames)


def test_a_split_is_streamed_when_it_exceeds_the_limit(frames_file, caplog, tiny_config):
    import logging

    with Frames(frames_file) as fr:
        nbytes = int(fr.stored_lengths[fr.split_ids("train")].sum()) * fr.frame_bytes
        assert type(load_bank(fr, "train", "cpu")) is not StreamedVideoBank          # the host's RAM: fits
        assert type(load_bank(fr, "train", "cpu", max_bytes=nbytes)) is not StreamedVideoBank
        with caplog.at_level(logging.INFO, logger="vdc.frames"):
            streamed = load_bank(fr, "train", "cpu", max_bytes=nbytes - 1)
        assert isinstance(streamed, StreamedVideoBank) and "streamed from the file" in caplog.text
        ds = tiny_config(datasets={"tiny": {"bank_gb": 0}})["datasets"]["tiny"] | {"name": "tiny"}
        assert isinstance(load_bank(fr, "train", "cpu", dataset=ds), StreamedVideoBank)
        limit, why = bank_limit("cpu", ds)
        assert limit == 0 and why == "datasets.tiny.bank_gb"
        ds["bank_gb"] = None
        limit, why = bank_limit("cpu", ds)
        assert limit > 0 and "RAM" in why
        mem = load_bank(fr, "train", "cpu")
        videos = torch.arange(len(mem))
        idx = C.center_frame_indices(mem.lengths, 8, 8)
        assert torch.equal(mem.gather(videos, idx), streamed.gather(videos, idx))


def test_every_stage_loads_its_banks_under_the_datasets_bank_gb(frames_file, tiny_config, tmp_path, monkeypatch):
    """datasets.<name>.bank_gb reaches the banks of experts (train, test), condense and stats, which
    loaded them without it before (teacher and evaluate always passed it): with bank_gb 0 each streams
    the split from the file instead of loading it."""
    import vdc.data.frames as F
    from vdc.condense.base import Context
    from vdc.condense.edc_stats import stats_for_teacher
    from vdc.config import stage_settings
    from vdc.formats.teacher import save_teacher
    from vdc.models import create_model
    from vdc.train.experts import _Data

    seen = []
    real = F.bank_limit

    def recording(device, dataset=None):
        seen.append(dataset)
        return real(device, dataset)

    monkeypatch.setattr(F, "bank_limit", recording)
    cfg = tiny_config(datasets={"tiny": {"bank_gb": 0}})
    data = _Data(frames_file, stage_settings(cfg, "experts", "tiny"), torch.device("cpu"))
    assert isinstance(data.train, StreamedVideoBank) and isinstance(data.test.labels, torch.Tensor)
    st = stage_settings(cfg, "condense", "tiny", method="random", ipc=1, seed=0)
    ctx = Context(frames_path=frames_file, ipc=1, seed=0, settings=st["settings"], stage=st,
                  device=torch.device("cpu"), workdir=tmp_path / "work")
    assert isinstance(ctx.train_bank, StreamedVideoBank)
    with Frames(frames_file) as fr:
        k = fr.num_classes
    teacher = tmp_path / "teacher.pt"
    save_teacher(teacher, "minic3d", k, {"width": 0.125, "dropout": 0.0}, create_model("minic3d", k, width=0.125), {})
    stats_for_teacher(frames_file, teacher, tmp_path / "stats.h5", stage_settings(cfg, "stats", "tiny", arch="minic3d"))
    assert len(seen) == 4 and all(d is not None and d["bank_gb"] == 0 for d in seen), seen
