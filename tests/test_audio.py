import os
import stat

import numpy as np
import pytest
import soundfile as sf
import torch

from unasdiff.audio import gain_to_rms, load_audio, peak_dbfs, read_audio, rms_dbfs, write_audio
from unasdiff.errors import UnasdiffError
from unasdiff.files import write_text


def _sine(rate, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x * (1.0 - 0.5 * c) for c in range(channels)], axis=1)


@pytest.mark.parametrize("fmt,subtype,rate,channels", [
    ("wav", "PCM_16", 16000, 1), ("wav", "PCM_24", 44100, 2), ("wav", "FLOAT", 8000, 1),
    ("flac", "PCM_16", 48000, 2), ("ogg", "VORBIS", 22050, 1), ("mp3", "MPEG_LAYER_III", 44100, 1),
])
def test_formats_rates_and_channels_load_as_mono_16k(tmp_path, fmt, subtype, rate, channels, caplog):
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, _sine(rate, channels=channels), rate, subtype=subtype)
    caplog.set_level("INFO")
    x, info = load_audio(path, 16000)
    assert info.sample_rate == rate and info.channels == channels
    assert x.dtype == torch.float32 and x.dim() == 1
    assert abs(x.shape[0] - 8000) <= (1200 if fmt == "mp3" else 1)  # mp3 adds encoder delay/padding
    if rate != 16000:
        assert "resampled" in caplog.text
    if channels > 1:
        assert "down-mixed 2 channels" in caplog.text
    # a 440 Hz tone survives resampling: its level is kept within 0.5 dB
    expected = 20 * np.log10(0.5 / np.sqrt(2) * (0.75 if channels == 2 else 1.0))
    assert rms_dbfs(x[1000:-1000]).item() == pytest.approx(expected, abs=0.5)


def test_missing_and_non_audio_files(tmp_path):
    with pytest.raises(UnasdiffError, match="audio file not found"):
        read_audio(tmp_path / "nope.wav")
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    with pytest.raises(UnasdiffError, match="cannot read .*notes.wav as audio"):
        read_audio(text)
    with pytest.raises(UnasdiffError, match="is a folder"):
        read_audio(tmp_path)


def test_empty_and_nonfinite_files_are_refused(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(UnasdiffError, match="contains no samples"):
        read_audio(empty)
    bad = tmp_path / "nan.wav"
    data = _sine(16000)
    data[100] = np.nan
    sf.write(bad, data, 16000, subtype="FLOAT")
    with pytest.raises(UnasdiffError, match="NaN or infinite"):
        read_audio(bad)


def test_write_round_trip_and_atomicity(tmp_path, caplog):
    x = torch.tensor(_sine(16000)[:, 0])
    out = write_audio(tmp_path / "a" / "x.wav", x, 16000, subtype="float")
    back, _ = load_audio(out, 16000)
    assert torch.equal(back, x)
    write_audio(tmp_path / "y.wav", 3 * x, 16000)  # pcm16 clips and says so
    assert "clipped" in caplog.text
    y, info = load_audio(tmp_path / "y.wav", 16000)
    assert info.subtype == "PCM_16" and y.abs().max() <= 1.0
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.wav", "y.wav"]
    with pytest.raises(UnasdiffError, match="NaN"):
        write_audio(tmp_path / "z.wav", torch.tensor([0.0, float("nan")]), 16000)


def test_levels():
    x = torch.tensor(_sine(16000, seconds=1.0)[:, 0] * 2)  # full-scale sine
    assert rms_dbfs(x).item() == pytest.approx(-3.01, abs=0.01)
    assert peak_dbfs(x).item() == pytest.approx(0.0, abs=0.01)
    g = gain_to_rms(x, -23.0)
    assert rms_dbfs(g * x).item() == pytest.approx(-23.0, abs=1e-4)
    assert gain_to_rms(torch.zeros(100), -23.0).item() == 1.0


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_mode_of_a_plain_write(tmp_path, umask):
    """Atomic writes go through a mkstemp file (0600): the result must be as readable as open() makes it."""
    previous = os.umask(umask)
    try:
        wav = write_audio(tmp_path / "x.wav", torch.zeros(160), 16000)
        text = write_text(tmp_path / "t.json", "{}")
        plain = tmp_path / "plain"
        plain.write_text("")
    finally:
        os.umask(previous)
    for path in (wav, text):
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
