"""Long, short and hostile input; faults mid-run; config safety; determinism (the reliability issue)."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import TINY_SEPARATE, compose_config, make_fsd_tree, make_vctk_tree, system_folder, tone_bursts
from hydra.errors import ConfigCompositionException

from unasdiff.errors import UnasdiffError
from unasdiff.separate import run

REPO = Path(__file__).resolve().parent.parent
FLOAT_OUT = TINY_SEPARATE + ["labels=[null,3]", "write.subtype=float", "write.spectrogram=false"]


def _separate(tmp_path, mix, *extra):
    out = tmp_path / f"out_{mix.stem}"
    assert run(compose_config("separate", FLOAT_OUT + [f"mixture={mix}", f"output_dir={out}", *extra])) == 0
    return [sf.read(out / f"source_{k}_{n}.wav") for k, n in ((0, "speech"), (1, "Cello"))]


@pytest.mark.parametrize("rate,channels,subtype", [(8000, 1, "PCM_16"), (44100, 2, "PCM_24"), (48000, 1, "FLOAT"),
                                                   (22050, 2, "PCM_16")])
def test_rates_channels_and_sample_formats(tmp_path, rate, channels, subtype):
    audio = np.stack([tone_bursts(0.8, rate, c) for c in range(channels)], axis=1)
    mix = tmp_path / "mix.wav"
    sf.write(mix, audio, rate, subtype=subtype)
    for data, out_rate in _separate(tmp_path, mix):
        assert out_rate == rate and data.shape == (len(audio),) and np.isfinite(data).all()


def test_a_tenth_of_a_second_is_separated_and_a_few_samples_are_refused(tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, tone_bursts(0.1, 16000, 1, silence=False), 16000)
    for data, _ in _separate(tmp_path, short):
        assert data.shape == (1600,) and np.isfinite(data).all()
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, tone_bursts(0.005, 16000, 1, silence=False), 16000)
    with pytest.raises(UnasdiffError, match=r"lasts 5.0 ms, shorter than one STFT frame of the priors \(126 samples"):
        _separate(tmp_path, tiny)


def test_full_scale_and_very_quiet_input_give_the_same_separation_at_their_level(tmp_path):
    x = tone_bursts(0.6, 16000, 4, silence=False)
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    sf.write(loud, x / np.abs(x).max(), 16000, subtype="FLOAT")  # peaks at full scale
    quiet_gain = 10 ** (-60 / 20) / np.sqrt(np.mean((x / np.abs(x).max()) ** 2))
    sf.write(quiet, x / np.abs(x).max() * quiet_gain, 16000, subtype="FLOAT")  # -60 dBFS RMS
    for (a, _), (b, _) in zip(_separate(tmp_path, loud), _separate(tmp_path, quiet)):
        assert np.isfinite(a).all() and np.isfinite(b).all()
        # the level is normalised before and restored after: the pipeline is scale-equivariant
        # (to 1e-5 of the peak: the float rounding of the two gains differs, and guidance amplifies it a little)
        assert np.allclose(b, a * quiet_gain, rtol=1e-3, atol=1e-5 * np.abs(a).max() * quiet_gain)


def test_nan_file_is_refused_by_the_script_with_one_line(tmp_path):
    bad = tmp_path / "nan.wav"
    data = tone_bursts(0.5, 16000, 2)
    data[100] = np.inf
    sf.write(bad, data, 16000, subtype="FLOAT")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "separate.py"), f"mixture={bad}", *TINY_SEPARATE,
                           f"output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'h'}"], capture_output=True, text=True)
    assert proc.returncode == 1 and "NaN or infinite samples" in proc.stderr and "Traceback" not in proc.stderr


def test_same_seed_same_files_bit_for_bit(tmp_path):
    mix = tmp_path / "mix.wav"
    sf.write(mix, tone_bursts(0.7, 16000, 5), 16000)
    first = _separate(tmp_path / "a", mix)
    second = _separate(tmp_path / "b", mix)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, second))
    other = _separate(tmp_path / "c", mix, "seed=1")
    assert not np.array_equal(first[0][0], other[0][0])


def test_unknown_config_keys_are_refused_with_the_key_named():
    with pytest.raises(ConfigCompositionException, match="stepz"):
        compose_config("separate", ["sampler.stepz=5"])
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        compose_config("train_prior", ["train.max_stepz=5"])


def test_evaluation_killed_half_way_resumes_to_the_same_csv(tmp_path):
    vctk = make_vctk_tree(tmp_path / "vctk", speakers=("p227", "p232", "p257"), seconds=2.0)
    fsd = make_fsd_tree(tmp_path / "fsd", seconds=2.0)
    args = TINY_SEPARATE[:4] + ["progress=false", "recipe.seconds=1.0", "data.cache_dir=null", f"data.vctk_root={vctk}",
                                f"data.fsd_root={fsd}", "task=speech_speech", "n_mixtures=3", "write_wavs=0"]
    from unasdiff.evaluate import run as evaluate
    evaluate(compose_config("evaluate", args + [f"results_root={tmp_path / 'whole'}", "make_manifest=true"]))
    (tmp_path / "killed" / "speech_speech").mkdir(parents=True)
    (tmp_path / "killed" / "speech_speech" / "manifest.json").write_bytes(
        (tmp_path / "whole" / "speech_speech" / "manifest.json").read_bytes())
    whole = system_folder(tmp_path / "whole", "speech_speech", "hybrid-mixture-2steps-1x")
    scores = tmp_path / "killed" / "speech_speech" / whole.name / "scores.csv"  # the same settings: the same folder
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "evaluate.py"), *args,
                             f"results_root={tmp_path / 'killed'}", f"hydra.run.dir={tmp_path / 'h'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (scores.exists() and scores.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(scores, "ab") as f:
        f.write(b"speech_speech-0002,half a row")  # as if killed in the middle of a write
    evaluate(compose_config("evaluate", args + [f"results_root={tmp_path / 'killed'}"]))

    def rows(path):
        with open(path, newline="") as f:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    assert rows(scores) == rows(whole / "scores.csv")


@pytest.mark.parametrize("script,setting", [("separate.py", "output_dir"), ("evaluate.py", "results_root"),
                                            ("train_prior.py", "run_dir")])
@pytest.mark.parametrize("where", ["under_a_file", "in_proc"])
def test_an_output_location_that_cannot_be_written_is_one_line_before_any_work(tmp_path, script, setting, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    target = blocker / "out" if where == "under_a_file" else Path("/proc/unasdiff_forbidden")
    mix = tmp_path / "mix.wav"
    sf.write(mix, tone_bursts(0.5, 16000, 1), 16000)
    args = {"separate.py": [f"mixture={mix}", *TINY_SEPARATE],
            "evaluate.py": ["task=demo", *TINY_SEPARATE],
            "train_prior.py": ["experiment=smoke", "data=folder", f"data.folder_root={tmp_path}"]}[script]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args, f"{setting}={target}",
                           f"hydra.run.dir={tmp_path / 'h'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"error: cannot write to {target}" in proc.stderr and f"set {setting}" in proc.stderr
    assert "Traceback" not in proc.stderr
