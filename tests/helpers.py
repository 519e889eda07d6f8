"""Shared test helpers: composing the real Hydra configs."""


from unasdiff.config import compose

# Tiny reference networks with short windows and few steps: the real pipeline, fast on 2 cores.
TINY_SEPARATE = ["priors.speech=tiny_speech", "priors.sound=tiny_sound", "sampler.steps=2", "window.seconds=0.5",
                 "progress=false", "auto_label.steps=[100]", "auto_label.draws=1"]


def compose_config(name: str, overrides: list[str]):
    """The real config as the scripts compose it (preset=auto resolved)."""
    return compose(name, overrides)


def system_folder(results, task: str, system: str):
    """The one results folder of a system (results/<task>/<system>-<settings id>)."""
    from pathlib import Path

    found = sorted((Path(results) / task).glob(f"{system}-*/"))
    assert len(found) == 1, f"expected one folder of {system} in {Path(results) / task}, found {found}"
    return found[0]


def tone_bursts(seconds: float, rate: int, seed: int, silence: bool = True):
    """A test clip: tone bursts with silent gaps (so it has several active spans)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 2000) * t) + 0.05 * rng.standard_normal(t.size)
    if silence:
        x *= (np.sin(2 * np.pi * 1.3 * t) > -0.3)
    return x.astype(np.float32)


def make_vctk_tree(root, speakers=("p225", "p228", "p227"), per_speaker=2, seconds=1.5):
    """wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac (and mic2) at 48 kHz."""
    import soundfile as sf

    for i, spk in enumerate(speakers):
        folder = root / "wav48_silence_trimmed" / spk
        folder.mkdir(parents=True)
        for n in range(per_speaker):
            for mic in ("mic1", "mic2"):
                sf.write(folder / f"{spk}_{n + 1:03d}_{mic}.flac", tone_bursts(seconds, 48000, 10 * i + n), 48000)
    return root


FSD_TRAIN = [("aa01.wav", "Bark", 1), ("aa02.wav", "Bark", 1), ("aa03.wav", "Cello", 1), ("aa04.wav", "Cello", 0),
             ("aa05.wav", "Knock", 1)]
FSD_TEST = [("bb01.wav", "Bark"), ("bb02.wav", "Cello"), ("bb03.wav", "Knock")]


def make_fsd_tree(root, seconds=1.2):
    """FSDKaggle2018.audio_{train,test}/ and FSDKaggle2018.meta/*.csv at 44.1 kHz; bb03 is silent."""
    import numpy as np
    import soundfile as sf

    for split in ("train", "test"):
        (root / f"FSDKaggle2018.audio_{split}").mkdir(parents=True)
    (root / "FSDKaggle2018.meta").mkdir()
    for i, (name, _, _) in enumerate(FSD_TRAIN):
        sf.write(root / "FSDKaggle2018.audio_train" / name, tone_bursts(seconds, 44100, 100 + i), 44100)
    for i, (name, _) in enumerate(FSD_TEST):
        audio = tone_bursts(seconds, 44100, 200 + i) if name != "bb03.wav" else np.zeros(44100, np.float32)
        sf.write(root / "FSDKaggle2018.audio_test" / name, audio, 44100)
    with open(root / "FSDKaggle2018.meta" / "train_post_competition.csv", "w") as f:
        f.write("fname,label,manually_verified,freesound_id,license\n")
        f.writelines(f"{n},{lab},{v},1,CC0\n" for n, lab, v in FSD_TRAIN)
    with open(root / "FSDKaggle2018.meta" / "test_post_competition_scoring_clips.csv", "w") as f:
        f.write("fname,label,usage,freesound_id,license\n")
        f.writelines(f"{n},{lab},Public,1,CC0\n" for n, lab in FSD_TEST)
    return root
