"""scripts/separate.py and the stage behind it, with the tiny reference networks as priors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import TINY_SEPARATE, compose_config

import unasdiff.pipeline
from unasdiff.errors import UnasdiffError
from unasdiff.metrics import si_sdr
from unasdiff.pipeline import Separator
from unasdiff.separate import run
from unasdiff.separation.windows import guided_blocks, separate_in_windows, window_hop, window_starts

REPO = Path(__file__).resolve().parent.parent


def _write(path, seconds=0.7, rate=44100, channels=2, level=0.1):
    rng = np.random.default_rng(0)
    data = level * rng.standard_normal((int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, data, rate, subtype="PCM_24")
    return path


def test_separates_a_stereo_44k_file_into_wavs_png_and_json(tmp_path):
    mix = _write(tmp_path / "mix.wav")
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={mix}", f"output_dir={tmp_path / 'out'}",
                                                      "labels=[null,Bark]"])
    assert run(cfg) == 0
    out = tmp_path / "out"
    for name in ["source_0_speech.wav", "source_1_Bark.wav"]:
        info = sf.info(out / name)
        assert info.samplerate == 44100 and info.frames == int(0.7 * 44100) and info.channels == 1
    assert (out / "spectrograms.png").stat().st_size > 10_000
    summary = json.loads((out / "separation.json").read_text())
    assert summary["labels"] == [None, 23] and summary["config"]["sampler"]["method"] == "hybrid"


def test_auto_label_picks_and_reports_a_sound_class(tmp_path):
    mix = _write(tmp_path / "mix.wav", channels=1, rate=16000)
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={mix}", f"output_dir={tmp_path}", "task=sound_sound"])
    assert run(cfg) == 0
    summary = json.loads((tmp_path / "separation.json").read_text())
    first, second = summary["auto_labels"]["sound"]["chosen"]
    assert first != second and summary["sources"] == [first, second]
    assert len(summary["auto_labels"]["sound"]["top5_error"]) == 5


def test_silent_input_gives_silent_sources(tmp_path):
    mix = tmp_path / "silence.wav"
    sf.write(mix, np.zeros(8000, np.float32), 16000)
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={mix}", f"output_dir={tmp_path}", "labels=[null,3]"])
    assert run(cfg) == 0
    for wav in tmp_path.glob("source_*.wav"):
        assert not sf.read(wav)[0].any()


def test_a_folder_skips_bad_files_and_does_the_rest(tmp_path):
    folder = tmp_path / "mixes"
    folder.mkdir()
    _write(folder / "a.wav", channels=1)
    (folder / "b.wav").write_text("not audio")
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={folder}", f"output_dir={tmp_path / 'out'}",
                                                      "labels=[null,0]"])
    assert run(cfg) == 1
    assert (tmp_path / "out" / "a" / "source_1_Hi-hat.wav").exists()
    assert not (tmp_path / "out" / "b").exists()


PUBLISHED_IN_PLACE = (REPO / "checkpoints" / "speech" / "speech_source.pt").exists()
needs_no_published = pytest.mark.skipif(PUBLISHED_IN_PLACE, reason="the published priors are installed here")


@needs_no_published
def test_missing_published_checkpoint_says_where_to_put_it(tmp_path):
    mix = _write(tmp_path / "mix.wav", channels=1)
    cfg = compose_config("separate", [f"mixture={mix}", "preset=published"])
    with pytest.raises(UnasdiffError, match=r"put the published file speech_source.pt there.*checkpoints.speech=PATH"
                                            r".*preset=bundled"):
        run(cfg)


@needs_no_published
def test_preset_auto_takes_the_bundled_priors_and_whatever_the_command_line_sets_wins():
    cfg = compose_config("separate", ["sampler=dps", "sampler.steps=50"])
    assert cfg.preset.name == "bundled"
    assert "preset=auto: no checkpoints/speech/speech_source.pt" in cfg.preset.chosen_by
    assert dict(cfg.priors) == {"speech": "template_speech", "sound": "template_sound"}
    assert (cfg.sampler.method, cfg.sampler.steps) == ("dps", 50)  # the user's
    assert (cfg.sampler.n_samples, cfg.sampler.start_step, cfg.sampler.consistency) == (16, 174, "wiener")  # preset's
    assert (cfg.template_gradient, cfg.window.overlap, cfg.window.batch, cfg.window.block_seconds) == (
        "wiener", 0.125, 1, 16)  # preset's
    assert cfg.sampler.speaker_grouping == 0.064  # preset's
    assert compose_config("separate", ["sampler.speaker_grouping=null"]).sampler.speaker_grouping is None
    assert compose_config("separate", ["sampler.n_samples=2"]).sampler.n_samples == 2
    mine = compose_config("separate", ["template_gradient=exact", "window.overlap=0.5"])
    assert (mine.template_gradient, mine.window.overlap) == ("exact", 0.5)
    published = compose_config("separate", ["preset=published"])
    assert dict(published.priors) == {"speech": "speech", "sound": "sound"}
    assert (published.sampler.steps, published.sampler.n_samples, published.sampler.start_step) == (200, 1, None)


def test_preset_auto_leaves_the_sampler_alone_when_every_role_has_its_checkpoint():
    """One's own priors (here the tiny ones) get the configured sampler, not the bundled priors' settings."""
    cfg = compose_config("separate", ["priors.speech=tiny_speech", "priors.sound=tiny_sound"])
    assert cfg.preset.name == "published" and cfg.sampler.n_samples == 1 and cfg.sampler.steps == 200
    given = compose_config("separate", ["checkpoints.speech=tests/data/tiny_speech.pt",
                                        "checkpoints.sound=tests/data/tiny_sound.pt"])
    assert given.preset.name == "published"


@needs_no_published
def test_a_pure_noise_start_below_the_last_step_is_refused_with_the_fix():
    cfg = compose_config("separate", ["sampler.init=noise"])  # the bundled preset starts at step 174
    with pytest.raises(UnasdiffError, match=r"init=noise .*start_step=174: set sampler.start_step=null"):
        Separator(cfg)
    assert compose_config("separate", ["sampler.init=noise", "sampler.start_step=null"]).sampler.start_step is None


@needs_no_published
@pytest.mark.parametrize("setting, value", [("grouping", "-1"), ("grouping", "0"), ("grouping", "abc"),
                                            ("timbre", "-0.5"), ("timbre", "abc")])
def test_a_speaker_grouping_or_timbre_weight_out_of_range_is_refused_with_the_fix(setting, value):
    with pytest.raises(UnasdiffError, match=rf"sampler.speaker_{setting}={value}\b.*: .*such as 0.25 \(null: no "
                                            rf"grouping\) and a timbre weight such as 0.5"):
        Separator(compose_config("separate", [f"sampler.speaker_{setting}={value}"]))


@needs_no_published
def test_the_sampler_the_user_names_is_the_one_that_runs_and_the_json_says_so(tmp_path, capsys):
    mix = _write(tmp_path / "mix.wav", channels=1)
    cfg = compose_config("separate", [f"mixture={mix}", f"output_dir={tmp_path}", "sampler=dps", "sampler.steps=2",
                                      "sampler.n_samples=1", "progress=false"])
    assert run(cfg) == 0
    summary = json.loads((tmp_path / "separation.json").read_text())
    sampler = summary["config"]["sampler"]
    assert (sampler["method"], sampler["steps"], sampler["n_samples"]) == ("dps", 2, 1)
    assert summary["preset"]["name"] == "bundled" and summary["priors"]["speech"]["config"] == "template_speech"
    out = capsys.readouterr().out
    assert "preset: bundled (preset=auto:" in out and "sampler: dps, 2 steps from step 174" in out


def test_true_sources_are_scored_and_drawn(tmp_path, capsys):
    rate = 16000
    truth = [0.1 * np.sin(2 * np.pi * f * np.arange(rate) / rate).astype(np.float32) for f in (220, 3000)]
    for k, wave in enumerate(truth):
        sf.write(tmp_path / f"true_{k}.wav", wave, rate, subtype="FLOAT")
    sf.write(tmp_path / "mix.wav", truth[0] + truth[1], rate, subtype="FLOAT")
    cfg = compose_config("separate", TINY_SEPARATE + [
        f"mixture={tmp_path / 'mix.wav'}", f"output_dir={tmp_path / 'out'}", "labels=[null,3]",
        f"true_sources=[{tmp_path / 'true_0.wav'},{tmp_path / 'true_1.wav'}]"])
    assert run(cfg) == 0
    summary = json.loads((tmp_path / "out" / "separation.json").read_text())
    scores = summary["scores"]
    estimates = torch.stack([torch.from_numpy(sf.read(tmp_path / "out" / f"source_{k}_{n}.wav", dtype="float32")[0])
                             for k, n in enumerate(summary["sources"])])
    expected = si_sdr(estimates, torch.from_numpy(np.stack(truth)))
    assert scores["order"] == [0, 1]
    assert scores["si_sdr"] == pytest.approx(expected.tolist(), abs=0.05)  # pcm16 files against float scores
    assert "SI-SDRi" in capsys.readouterr().out


def test_interchangeable_sources_are_scored_in_the_order_that_fits_the_true_ones(tmp_path):
    rate = 16000
    truth = [0.1 * np.sin(2 * np.pi * f * np.arange(rate) / rate).astype(np.float32) for f in (220, 3000)]
    for k, wave in enumerate(truth):
        sf.write(tmp_path / f"true_{k}.wav", wave, rate, subtype="FLOAT")
    sf.write(tmp_path / "mix.wav", truth[0] + truth[1], rate, subtype="FLOAT")
    scores = []
    for given in ([0, 1], [1, 0]):  # the same two sounds, one prior, one label: the output order is the sampler's
        out = tmp_path / f"out{given[0]}"
        cfg = compose_config("separate", TINY_SEPARATE + [
            "task=sound_sound", f"mixture={tmp_path / 'mix.wav'}", f"output_dir={out}", "labels=[3,3]",
            f"true_sources=[{tmp_path / f'true_{given[0]}.wav'},{tmp_path / f'true_{given[1]}.wav'}]"])
        assert run(cfg) == 0
        scores.append(json.loads((out / "separation.json").read_text())["scores"])
    assert scores[0]["order"] == scores[1]["order"][::-1]
    assert sorted(scores[0]["si_sdr"]) == pytest.approx(sorted(scores[1]["si_sdr"]))


def test_true_sources_must_match_the_mixture(tmp_path):
    mix = _write(tmp_path / "mix.wav", channels=1)
    sf.write(tmp_path / "short.wav", np.zeros(800, dtype=np.float32), 16000)
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={mix}", f"output_dir={tmp_path / 'out'}",
                                                      f"true_sources=[{tmp_path / 'short.wav'},"
                                                      f"{tmp_path / 'short.wav'}]"])
    with pytest.raises(UnasdiffError, match=r"true source .*short.wav lasts 0.05 s but the mixture"):
        run(cfg)


def test_no_arguments_separate_the_bundled_example_with_the_bundled_priors(tmp_path, capsys):
    """What a newcomer runs first (here with 2 steps): no published priors in checkpoints/speech|sound."""
    cfg = compose_config("separate", [f"output_dir={tmp_path}", "sampler.steps=2", "progress=false"])
    if PUBLISHED_IN_PLACE:
        pytest.skip("published priors are installed here: the bundled preset is not exercised")
    assert run(cfg) == 0
    out = capsys.readouterr().out
    assert "separating the bundled example examples/speech_sound/mixture.wav" in out
    assert ("sampler: hybrid, 2 steps from step 174, the mixture noised to step 174, mean of 16 sample(s), "
            "consistency wiener") in out
    assert "speech prior: template_speech" in out and "sound prior: template_sound" in out
    assert "windows: 4 s in blocks of up to 16 s, overlap 0.125, 1 per batch; template gradient wiener" in out
    summary = json.loads((tmp_path / "separation.json").read_text())
    assert summary["sources"] == ["speech", "sound"] and len(summary["scores"]["si_sdri"]) == 2
    waves = []
    for k, name in enumerate(summary["sources"]):
        wave, rate = sf.read(tmp_path / f"source_{k}_{name}.wav")
        assert rate == 16000 and wave.shape == (64000,) and np.abs(wave).max() > 0
        waves.append(wave)
    mixture, _ = sf.read(REPO / "examples" / "speech_sound" / "mixture.wav")
    assert np.abs(sum(waves) - mixture).max() < 1e-3  # consistency: the sources add up to the mixture (pcm16)
    assert (tmp_path / "spectrograms.png").stat().st_size > 10_000


def test_bundled_example_must_fit_the_task():
    cfg = compose_config("separate", TINY_SEPARATE + ["task=sound_sound"])
    with pytest.raises(UnasdiffError, match=r"bundled example holds speech \+ sound but task=sound_sound"):
        run(cfg)


@pytest.mark.parametrize("args,message", [
    (["mixture=/no/such/file.wav"], "error: mixture not found: /no/such/file.wav"),
    (["labels=[null,Barking]"], "error: unknown class 'Barking'"),
])
def test_script_fails_with_one_line(tmp_path, args, message):
    mix = _write(tmp_path / "mix.wav", channels=1)
    cmd = [sys.executable, str(REPO / "scripts" / "separate.py"), f"mixture={mix}", f"output_dir={tmp_path}",
           f"hydra.run.dir={tmp_path / 'hydra'}", *TINY_SEPARATE, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


# --- windows ---

@pytest.mark.parametrize("length", [100, 4000, 4001, 9999, 20000])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.25])
def test_windows_join_without_seams(length, overlap):
    x = torch.randn(length)

    def fixed_split(windows):  # a "separator" that splits each window 30/70
        return torch.stack([0.3 * windows, 0.7 * windows], dim=1)

    out = separate_in_windows(x, fixed_split, window=4000, overlap=overlap, batch=3)
    assert out.shape == (2, length)
    assert torch.allclose(out, torch.stack([0.3 * x, 0.7 * x]), atol=1e-6)


@pytest.mark.parametrize("length", [999, 64000, 100000, 960000, 9600000])
@pytest.mark.parametrize("block", [64000, 256000, 300000])
def test_guided_blocks_are_whole_windows_that_share_what_windows_share(length, block):
    window, overlap = 64000, 0.125
    tiled, block_overlap, segment = guided_blocks(length, window, overlap, block)
    starts = window_starts(length, tiled, window_hop(tiled, block_overlap))
    assert tiled % segment == 0 and starts[-1] + tiled >= length
    if length <= window:  # one block, the recording itself
        assert tiled == segment == length and starts == [0]
        return
    assert 0.5 * window < segment < 1.5 * window and tiled <= block + tiled // segment
    assert window_hop(tiled, block_overlap) == tiled - 8000  # blocks share what the windows would
    fewest = max(1, math.ceil((length - 8000) / (block - 8000)))
    assert len(starts) == fewest and starts[-1] + tiled - length < fewest * tiled // segment + 1  # little padding


def test_windows_of_same_class_sources_are_aligned():
    t = torch.arange(30000) / 16000
    truth = torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sign(torch.sin(2 * torch.pi * 7 * t))])
    window, overlap = 8000, 0.5
    starts = iter(window_starts(30000, window, 4000))
    padded = torch.nn.functional.pad(truth, (0, window))
    count = iter(range(100))

    def swapping(windows):  # the true sources of each window, in a different order every other window
        out = []
        for _ in windows:
            start = next(starts)
            pair = padded[:, start:start + window]
            out.append(pair.flip(0) if next(count) % 2 else pair)
        return torch.stack(out)

    out = separate_in_windows(truth.sum(0), swapping, window=window, overlap=overlap, batch=2, groups=[[0, 1]])
    assert torch.allclose(out, truth, atol=1e-5)


def test_blocks_separate_a_one_window_recording_as_windows_do_and_a_long_one_in_blocks(monkeypatch):
    base = ["preset=bundled", "sampler.steps=3", "sampler.n_samples=2", "progress=false"]
    mixture = 0.05 * torch.randn(64000, generator=torch.Generator().manual_seed(0))
    windowed = Separator.from_config(base + ["window.block_seconds=null", "window.batch=4"]).separate_mixture(
        mixture, ["speech", "sound"], [None, None])[0]
    blocked = Separator.from_config(base)  # the preset's blocks of up to 16 s
    assert torch.allclose(blocked.separate_mixture(mixture, ["speech", "sound"], [None, None])[0], windowed, atol=1e-6)
    calls, separate = [], unasdiff.pipeline.separate

    def recorded(windows, *args, **kwargs):
        calls.append((tuple(windows.shape), kwargs["segment"]))
        return separate(windows, *args, **kwargs)

    monkeypatch.setattr(unasdiff.pipeline, "separate", recorded)
    long = 0.05 * torch.randn(20 * 16000, generator=torch.Generator().manual_seed(1))
    sources = blocked.separate_mixture(long, ["speech", "sound"], [None, None])[0]
    assert sources.shape == (2, len(long)) and bool(sources.abs().sum(-1).gt(0).all())
    assert calls == [((1, 3 * 54667), 54667)] * 2  # two blocks of three 3.4 s windows, one block per batch
