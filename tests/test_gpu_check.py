"""benchmarks/gpu_check.py --smoke: every part of the prepared GPU check runs on the CPU, so it cannot rot before
a GPU is lent; and the training pack it travels with round-trips."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from build_training_pack import build_pack, unpack_pack  # noqa: E402


def _training_audio(root: Path) -> Path:
    """<root>/<role>/<package>/*.wav: tones for speech, noise bursts for sound, 2 s each at 16 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    for role in ("speech", "sound"):
        folder = root / role / f"{role}-package"
        folder.mkdir(parents=True)
        for i in range(4):
            if role == "speech":
                wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
            else:
                wave = 0.3 * rng.standard_normal(t.size) * (t < 1.0 + 0.3 * i)
            sf.write(folder / f"{i}.wav", wave.astype(np.float32), 16000)
    return root


def test_the_pack_holds_crops_at_the_training_level_and_unpacks_to_wavs(tmp_path):
    # 3 crops asked of 4 clips
    info = build_pack(_training_audio(tmp_path / "train"), tmp_path / "pack.npz", minutes=0.025, seconds=0.5)
    assert info["sources"] == {"speech": ["speech-package"], "sound": ["sound-package"]}
    assert info["crops"] == {"speech": 3, "sound": 3}
    folders = unpack_pack(tmp_path / "pack.npz", tmp_path / "unpacked")
    for role in ("speech", "sound"):
        files = sorted(folders[role].glob("*.wav"))
        assert len(files) == 3
        wave, rate = sf.read(files[0])
        assert rate == 16000 and wave.shape == (8000,)
        level = 10 * np.log10(np.mean(wave ** 2))
        assert -26.0 < level < -19.0  # the recipe's -25..-20 dBFS, within 16-bit rounding


def test_the_full_check_without_cuda_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip() == "error: no CUDA device here; use --smoke on a CPU"


def test_smoke_mode_passes_every_check_and_exports_the_trained_prior(tmp_path):
    audio, out = _training_audio(tmp_path / "train"), tmp_path / "out"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--smoke", "--out", str(out),
                           "--train-audio", str(audio)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    checks = {c["check"]: c["result"] for part in report["parts"].values() for c in part["checks"]}
    assert set(checks.values()) == {"PASS"}
    assert {"forward fp32 on the device = CPU", "hybrid guided step on the device = CPU",
            "training step, checkpoint and bit-exact resume", "scripts/separate.py end to end",
            "demo two-class prior trained and exported"} <= set(checks)
    rows = report["parts"]["speed"]["rows"]
    assert {r["what"] for r in rows} >= {"forward", "fwd+bwd", "guided step, two priors"}
    assert all("seconds" in r for r in rows), rows
    assert "| check | result |" in (out / "report.md").read_text()
    exported = torch.load(out / "demo_two_class.pt", weights_only=True)
    assert exported
