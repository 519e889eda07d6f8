"""Corpora on their real layouts, the span preprocessing, and the training crop stream."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_fsd_tree, make_vctk_tree

from unasdiff.audio import read_audio, to_mono
from unasdiff.data.corpora import folder_clips, fsd_clips, vctk_clips
from unasdiff.data.crops import CropStream, StreamBatches
from unasdiff.data.spans import active_spans, span_probabilities
from unasdiff.errors import UnasdiffError

REPO = Path(__file__).resolve().parent.parent


def test_spans_match_the_reference_manifest(data_dir):
    folder = data_dir / "fsd_clips"
    for entry in json.loads((folder / "reference_spans.json").read_text()):
        data, info = read_audio(folder / entry["wave_path"])
        spans = active_spans(to_mono(data), info.sample_rate)
        assert [list(s) for s in spans] == entry["spans"], entry["wave_path"]
        assert np.allclose(span_probabilities(spans), entry["span_probs"])


def test_vctk_split_mics_and_bad_roots(tmp_path):
    root = make_vctk_tree(tmp_path / "vctk")
    train = vctk_clips(root, "train")
    assert {c.path.parent.name for c in train} == {"p225", "p228"}  # p227 is a test speaker
    assert all(c.path.name.endswith("_mic1.flac") and c.label is None for c in train)
    assert len(vctk_clips(root, "test", mic="both")) == 4
    with pytest.raises(UnasdiffError, match="not a VCTK 0.92 root.*wav48_silence_trimmed"):
        vctk_clips(tmp_path)


def test_fsd_clips_labels_verification_and_missing_files(tmp_path):
    root = make_fsd_tree(tmp_path / "fsd")
    clips = fsd_clips(root, "train")
    assert [c.path.name for c in clips] == ["aa01.wav", "aa02.wav", "aa03.wav", "aa05.wav"]  # aa04 unverified
    assert [c.label for c in clips] == [23, 23, 3, 20]
    assert len(fsd_clips(root, "train", verified_only=False)) == 5
    (root / "FSDKaggle2018.audio_train" / "aa02.wav").unlink()
    with pytest.raises(UnasdiffError, match="names 1 files missing .*aa02.wav"):
        fsd_clips(root, "train")
    with pytest.raises(UnasdiffError, match="not an FSDKaggle2018 root"):
        fsd_clips(tmp_path / "nowhere", "test")


def test_make_spans_command_writes_the_manifest_and_reports_silent_clips(tmp_path):
    root = make_fsd_tree(tmp_path / "fsd")
    out = tmp_path / "spans" / "test.json"
    proc = subprocess.run([sys.executable, str(REPO / "sound_dataset_process" / "make_spans.py"), "--fsd-root",
                           str(root), "--split", "test", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(out.read_text())
    assert [e["wave_path"] for e in entries] == ["FSDKaggle2018.audio_test/bb01.wav",
                                                 "FSDKaggle2018.audio_test/bb02.wav"]
    assert entries[0]["wave_label"] == "Bark" and abs(sum(entries[0]["span_probs"]) - 1) < 1e-9
    assert "1 of 3 clips have no active span" in proc.stdout
    assert (tmp_path / "spans" / "test.json.no_spans.txt").read_text().strip() == "FSDKaggle2018.audio_test/bb03.wav"


def test_crop_stream_is_deterministic_levelled_and_cached(tmp_path):
    root = make_fsd_tree(tmp_path / "fsd")
    stream = CropStream(fsd_clips(root, "train"), seconds=0.5, cache_dir=tmp_path / "cache", seed=3)
    items = [stream[p] for p in range(8)]
    wave, label, valid, position = items[5]
    assert wave.shape == (8000,) and valid and position == 5 and label in (23, 3, 20)
    assert torch.equal(stream[5][0], wave)  # a function of the position
    levels = [20 * torch.log10(w.pow(2).mean().sqrt()).item() for w, *_ in items]
    assert all(-25.01 <= lv <= -19.99 for lv in levels)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4  # resampled once per clip
    # every clip once per epoch
    assert sorted(stream.clip_index(p) for p in range(4)) == [0, 1, 2, 3]


def test_short_and_unreadable_clips(tmp_path):
    root = make_fsd_tree(tmp_path / "fsd", seconds=0.2)
    (root / "FSDKaggle2018.audio_train" / "aa03.wav").write_text("broken")
    stream = CropStream(fsd_clips(root, "train"), seconds=1.0, seed=0)
    results = [stream[p] for p in range(4)]
    assert sum(not valid for _, _, valid, _ in results) == 1
    for wave, _, valid, _ in results:
        assert wave.shape == (16000,)
        if valid:  # a 0.2 s clip placed in 1 s of silence
            assert (wave == 0).sum() >= 16000 - 3300


def test_stream_batches_split_the_global_batch_between_processes():
    single = iter(StreamBatches(6, first_step=2))
    ranks = [iter(StreamBatches(6, first_step=2, rank=r, world=3)) for r in range(3)]
    for _ in range(2):
        assert sorted(sum((next(r) for r in ranks), [])) == next(single)
    with pytest.raises(UnasdiffError, match="not divisible"):
        StreamBatches(5, world=2)


def test_folder_clips(tmp_path):
    with pytest.raises(UnasdiffError, match="no audio files"):
        folder_clips(tmp_path)
    for path in ("drums/kit/snare.wav", "drums/kick.flac", "birds/crow.ogg", "notes.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    assert [c.path.name for c in folder_clips(tmp_path)] == ["crow.ogg", "kick.flac", "snare.wav"]
    assert [c.path.name for c in folder_clips(tmp_path, exclude=("drums",))] == ["crow.ogg"]
    with pytest.raises(UnasdiffError, match="no audio files .* outside birds, drums"):
        folder_clips(tmp_path, exclude=("birds", "drums"))
    with pytest.raises(UnasdiffError, match="cannot exclude drum: no such sub-folder"):
        folder_clips(tmp_path, exclude=("drum",))


def test_active_crop_always_holds_part_of_the_active_span():
    from unasdiff.data.spans import active_crop, active_spans

    rate, length = 16000, 4000
    audio = np.zeros(5 * rate, dtype=np.float32)
    audio[3 * rate:3 * rate + 800] = 0.5  # one 50 ms burst in 5 s of silence
    (span_start, span_end), = active_spans(audio, rate)
    rng = np.random.default_rng(0)
    for _ in range(20):
        start, crop = active_crop(audio, length, rate, rng)
        assert len(crop) == length and np.array_equal(crop, audio[start:start + length])
        assert start / rate <= span_end and (start + length) / rate >= span_start  # the window meets the span
    # a silent clip: any window of the whole clip, still the right length
    start, crop = active_crop(np.zeros(rate, dtype=np.float32), length, rate, rng)
    assert len(crop) == length and 0 <= start <= rate - length
