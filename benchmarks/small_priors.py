"""The bundled priors on real audio: the paper's ablation at small scale, for either kind of bundled prior.

    python scripts/gather_demo_audio.py                       # once: data/demo/train and data/demo/heldout
    python benchmarks/small_priors.py --priors template       # every system, 30 held-out speech + sound mixtures
    python benchmarks/small_priors.py --priors network --systems msdm_dirac-50 --mixtures 8
    python benchmarks/small_priors.py --validation --priors template    # validation mixtures: where settings are chosen
    python benchmarks/small_priors.py --validation --fit prior.net.templates=64 --systems hybrid-100-4samples
    python benchmarks/small_priors.py --validation --sampler sampler.init_step=99 --systems hybrid-100-4samples
    python benchmarks/small_priors.py --demo --mixtures 5 --systems msdm_dirac-100-4samples   # the paper's demo page
    python benchmarks/small_priors.py --task sound_sound --systems hybrid-100-16samples      # two held-out sounds

Each system is one `scripts/evaluate.py` run (the same code path, so a stopped benchmark resumes where
it stopped): the mixtures follow the paper's recipe (4 s, a speaker and a sound clip, each at -25..-20 dBFS
RMS; --task for another of the recipe's tasks) and are written once to <results>/<task>/manifest.json.
Held-out mixtures take the VCTK and FSDKaggle2018 clips of data/demo/heldout (never trained on, never used
to choose a setting).

Validation mixtures, the only ones settings are chosen on, take training-side audio of whole packages
(VALIDATION_PACKAGES) that the priors being validated were not fitted on: with --validation, template
priors are fitted here without those packages (data.exclude), with the --fit overrides (e.g. --fit
prior.net.templates=32), once: they are cached under <results>/priors/ and, like the systems' results,
named by a hash of their settings (-fit<id>). So validation, like the held-out judge, measures priors on
audio from sources they have never seen. The bundled priors are then fitted on all packages with the
chosen settings. --priors picks the bundled network priors (checkpoints/demo/{speech,sound}.pt, override
with --speech/--sound, whose results are then named by a hash of the files, -ckpt<id>, so that a training
run's last.pt is scored anew after more steps), the spectral-template priors (checkpoints/demo/template_*.pt)
or the template-residual priors (checkpoints/demo/residual_*.pt: a template plus a network of its residual).
The table gives SI-SDRi (dB, mean over sources and mixtures) per system, with the mixture itself as the 0 dB
baseline, and is also written to <results>/<task>/table.md with SI-SDR and SDR.
"""

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from unasdiff.audio import load_audio, write_audio  # noqa: E402
from unasdiff.config import CONFIG_DIR, REPO_ROOT  # noqa: E402
from unasdiff.data.corpora import folder_clips  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.evaluate import run as evaluate  # noqa: E402
from unasdiff.files import write_text  # noqa: E402
from unasdiff.separation import CONSISTENCY  # noqa: E402
from unasdiff.template_fitting import fit as fit_template  # noqa: E402

# name -> evaluate.py overrides. The questions of the ablation: guidance rule, initialisation, step count,
# averaging samples. Guidance constants are per step of the 200-step schedule at every step count (guidance.py).
RULES = ("hybrid", "dps", "dsg", "msdm_dirac", "undiff")
SYSTEMS = {}
for steps in (200, 100, 50, 25):
    for rule in RULES:
        SYSTEMS[f"{rule}-{steps}"] = [f"sampler={rule}", f"sampler.steps={steps}"]
    SYSTEMS[f"hybrid-{steps}-noise-init"] = SYSTEMS[f"hybrid-{steps}"] + ["sampler.init=noise"]
    SYSTEMS[f"msdm_dirac-{steps}-noise-init"] = SYSTEMS[f"msdm_dirac-{steps}"] + ["sampler.init=noise"]
    for rule in ("hybrid", "msdm_dirac"):
        for samples in (4, 8, 16, 32, 64):
            SYSTEMS[f"{rule}-{steps}-{samples}samples"] = SYSTEMS[f"{rule}-{steps}"] + [f"sampler.n_samples={samples}"]
PRIORS = {"network": ("demo_speech", "demo_sound"), "template": ("template_speech", "template_sound"),
          "residual": ("residual_speech", "residual_sound")}
DEMO_DATA = REPO_ROOT / "data" / "demo"  # scripts/gather_demo_audio.py's output; --data for another
# Packages of data/demo/train/<role> held out of the priors that --validation measures: varied recordings
# (spoken letters in 20 languages; animals, vehicles, instruments, household sounds and percussion).
VALIDATION_PACKAGES = {"speech": ("klettres-data",),
                       "sound": ("tuxpaint-stamps-default", "gcompris-qt-data", "sonic-pi-samples")}
# Mixtures of two speakers draw distinct voices: the folders of a package that hold one voice each (klettres-data
# records every language with one speaker). Its clips are single letters and syllables (1.4 s on average) where
# the held-out talkers speak whole sentences, so each voice's clips are joined in random order into streams of
# VOICE_STREAM_SECONDS (<results>/mixtures/speech-voices/<package>-<voice>/<n>.wav): continuous speech of one
# voice, overlapped by the recipe as the held-out sentences are.
VOICE_FOLDERS = {"klettres-data": "klettres/*"}
VOICE_STREAMS, VOICE_STREAM_SECONDS = 6, 6.0
TRIM_DB = 40.0
SAMPLE_RATE = 16000
MANIFEST_SIZE = 30  # mixtures written to a new manifest (--manifest-size)
TASKS = ("speech_sound", "speech_2sound", "sound_sound", "sound_3sound", "speech_speech")  # the recipe's (configs/task)


def override_tag(overrides: list[str]) -> str:
    """Overrides as part of a name: 'prior.net.templates=64' -> '-templates64', 'sampler.rules.hybrid.scale=0.18'
    -> '-scale0.18'."""
    return "".join(f"-{key.rsplit('.', 1)[-1]}{value}" for key, value in (o.split("=", 1) for o in overrides))


def system_name(name: str, args) -> str:
    consistency = "" if args.consistency == "none" else f"-{args.consistency}"
    fitted = f"-fit{args.fit_id}" if args.fit_id else ""
    given = f"-ckpt{args.checkpoint_id}" if args.checkpoint_id else ""
    return f"{args.priors}-{name}{consistency}{override_tag(args.sampler)}{override_tag(args.fit)}{fitted}{given}"


def checkpoint_id(paths: list) -> str | None:
    """6 hex digits of the contents of the checkpoints given with --speech/--sound (None if none): results of
    another checkpoint, or of the same path after more training, are never taken for these."""
    paths = [Path(p) for p in paths if p]
    for path in paths:
        if not path.is_file():
            raise UnasdiffError(f"no checkpoint at {path} (--speech/--sound)")
    return hashlib.sha1(b"".join(path.read_bytes() for path in paths)).hexdigest()[:6] if paths else None


def fit_id(configs: dict) -> str:
    """6 hex digits naming what validation priors were fitted with (prior, fit and data settings), so that
    a cached prior or result from other settings (an edited config file, say) is never reused."""
    settings = {role: {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("prior", "fit", "data")}
                for role, cfg in configs.items()}
    for role in settings.values():
        del role["data"]["cache_dir"]  # where resampled audio is cached, not what it is
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]


def without_silent_ends(x: torch.Tensor) -> torch.Tensor:
    """x [L] from its first to its last frame (20 ms) within TRIM_DB of its loudest: a clip's silent ends cut."""
    frame = SAMPLE_RATE // 50
    energy = torch.nn.functional.pad(x, (0, -len(x) % frame)).reshape(-1, frame).pow(2).sum(-1)
    loud = (energy > energy.max() * 10 ** (-TRIM_DB / 10)).nonzero()[:, 0]
    return x[int(loud[0]) * frame:(int(loud[-1]) + 1) * frame] if len(loud) else x


def write_voice_streams(package: Path, voice_glob: str, out: Path, seed: int) -> None:
    """VOICE_STREAMS streams per voice folder of `package` (once): its clips, their silent ends cut, joined in a
    random order, so that the voice talks on like a sentence's."""
    rng = np.random.default_rng(seed)
    for voice in sorted(p for p in package.glob(voice_glob) if p.is_dir()):
        folder = out / f"{package.name}-{voice.name}"
        if folder.is_dir():
            continue
        clips = [clip.path for clip in folder_clips(voice)]
        streams = []
        for _ in range(VOICE_STREAMS):
            pieces, length = [], 0
            while length < VOICE_STREAM_SECONDS * SAMPLE_RATE:
                pieces.append(without_silent_ends(load_audio(clips[int(rng.integers(len(clips)))], SAMPLE_RATE)[0]))
                length += len(pieces[-1])
            streams.append(torch.cat(pieces)[:int(VOICE_STREAM_SECONDS * SAMPLE_RATE)])
        out.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=out))  # a stopped run leaves no half voice
        for n, stream in enumerate(streams):
            write_audio(partial / f"{n}.wav", stream, SAMPLE_RATE)
        partial.rename(folder)


def claim_seed(results: Path, seed: int) -> None:
    """Record in <results>/seed the --seed that its streams, manifests and priors are drawn with (once); refuse
    another, since those would be reused as they are."""
    path = results / "seed"
    recorded = path.read_text().strip() if path.is_file() else None
    if recorded is None:
        write_text(path, f"{seed}\n")
    elif recorded != str(seed):
        raise UnasdiffError(f"{results} was made with --seed {recorded}: give --seed {seed} another --results folder")


def validation_priors(args) -> None:
    """Fit template priors without VALIDATION_PACKAGES (once) and point args.speech/args.sound at them;
    link the held-out packages into <results>/mixtures/<role>/ for the validation mixtures."""
    for role, packages in VALIDATION_PACKAGES.items():
        train = args.data / "train" / role
        mixtures = Path(args.results) / "mixtures" / role
        mixtures.mkdir(parents=True, exist_ok=True)
        for package in packages:
            if not (train / package).is_dir():
                raise UnasdiffError(f"{train / package} not found: run scripts/gather_demo_audio.py")
            if not (mixtures / package).exists():
                (mixtures / package).symlink_to((train / package).resolve(), target_is_directory=True)
            if role == "speech" and package in VOICE_FOLDERS:
                write_voice_streams(train / package, VOICE_FOLDERS[package], mixtures.with_name("speech-voices"),
                                    args.seed)
    if args.priors != "template":
        return
    configs = {}
    for role, packages in VALIDATION_PACKAGES.items():
        overrides = [f"experiment=template_{role}", f"data.exclude=[{','.join(packages)}]", f"seed={args.seed}",
                     *args.fit]
        if args.data != DEMO_DATA:  # the experiment's own folder is data/demo/train/<role>
            overrides.append(f"data.folder_root={args.data / 'train' / role}")
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            configs[role] = compose(config_name="fit_template_prior", overrides=overrides)
    args.fit_id = fit_id(configs)
    for role, cfg in configs.items():
        cfg.out = str(Path(args.results) / "priors" / f"template_{role}-{args.fit_id}.pt")
        if not Path(cfg.out).exists():
            fit_template(cfg)
        setattr(args, role, getattr(args, role) or cfg.out)


def speech_folder(args) -> str:
    """The folder of <results>/mixtures (or heldout) that speech is drawn from: one voice per group where a
    validation task has several speakers."""
    return "speech-voices" if args.validation and args.task == "speech_speech" else "speech"


def system_config(name: str, args) -> DictConfig:
    speech, sound = PRIORS[args.priors]
    overrides = [*SYSTEMS[name], f"sampler.consistency={args.consistency}",
                 f"system={system_name(name, args)}",
                 f"results_root={args.results}",
                 f"priors.speech={speech}", f"priors.sound={sound}", "progress=false", "write_wavs=3",
                 f"manifest_seed={args.seed}"]
    if args.speech:
        overrides.append(f"checkpoints.speech={args.speech}")
    if args.sound:
        overrides.append(f"checkpoints.sound={args.sound}")
    if args.demo:
        overrides += ["task=demo", f"demo_root={args.demo_root}", f"max_mixtures={args.mixtures or 'null'}"]
    else:
        manifest = Path(args.results) / args.task / "manifest.json"
        overrides += [f"task={args.task}", f"n_mixtures={args.manifest_size}",
                      f"max_mixtures={args.mixtures or 'null'}", f"make_manifest={not manifest.exists()}",
                      f"data.speech_folder={args.audio / speech_folder(args)}",
                      f"data.sound_folder={args.audio / 'sound'}"]
    overrides += args.sampler
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--manifest-size", type=int, default=MANIFEST_SIZE,
                        help="mixtures drawn when <results>/<task>/manifest.json is written (a new --results "
                             "folder); the draws are sequential, so the first N of a larger manifest are the same "
                             "N mixtures and a system's scores of them carry over")
    parser.add_argument("--mixtures", type=int, help=f"the first N mixtures (default: all; {MANIFEST_SIZE} held-out "
                                                      "ones, or the 28 demo mixtures)")
    parser.add_argument("--consistency", choices=CONSISTENCY, default="none",
                        help="sampler.consistency of every system: make the sources sum to the mixture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=TASKS, default="speech_sound",
                        help="which sources the recipe's mixtures take (configs/task/)")
    parser.add_argument("--demo", action="store_true", help="the paper's 28 demo mixtures instead")
    parser.add_argument("--demo-root", help="--demo: a clone of the reference repository (or its docs/audios)")
    parser.add_argument("--validation", action="store_true",
                        help="validation mixtures of training-side packages the priors were not fitted on "
                             "(VALIDATION_PACKAGES) instead of held-out ones")
    parser.add_argument("--fit", nargs="+", default=[], metavar="OVERRIDE",
                        help="--validation: fit_template_prior overrides of the template priors fitted here")
    parser.add_argument("--sampler", nargs="+", default=[], metavar="OVERRIDE",
                        help="evaluate.py overrides for every system, applied after this script's own "
                             "(e.g. sampler.rules.hybrid.scale=0.05, write_wavs=40)")
    parser.add_argument("--priors", choices=list(PRIORS), default="template")
    parser.add_argument("--data", type=Path, default=DEMO_DATA,
                        help="the demo audio (scripts/gather_demo_audio.py --out): train/ and heldout/")
    parser.add_argument("--results", help="default: results/small_priors, or results/validation with --validation")
    parser.add_argument("--speech", help="speech prior checkpoint (default: the bundled one of --priors)")
    parser.add_argument("--sound", help="sound prior checkpoint (default: the bundled one of --priors)")
    args = parser.parse_args()
    args.results = args.results or str(REPO_ROOT / "results" / ("validation" if args.validation else "small_priors"))
    args.audio = Path(args.results) / "mixtures" if args.validation else args.data / "heldout"
    args.fit_id = None
    claim_seed(Path(args.results), args.seed)
    args.checkpoint_id = checkpoint_id([args.speech, args.sound])
    if args.validation:
        if args.priors != "template" and not (args.speech and args.sound):
            raise UnasdiffError(f"the bundled {args.priors} priors were trained on the validation packages too: "
                                f"pass --speech and --sound checkpoints trained with data.exclude=[...] "
                                f"(VALIDATION_PACKAGES)")
        validation_priors(args)
    elif args.fit:
        raise UnasdiffError("--fit applies to the priors fitted for --validation only")
    rows = []
    for name in args.systems:
        cfg = system_config(name, args)
        started = time.perf_counter()
        folder = evaluate(cfg)
        table = folder.parent / "table.md"
        summary = json.loads((folder / "summary.json").read_text())
        scores = summary["scores"]
        by_role = [scores.get(f"role:{r}", {}).get("si_sdri", {}).get("mean", float("nan"))
                   for r in ("speech", "sound")]
        rows.append((system_name(name, args), summary["mixtures"], scores["all"]["si_sdri"]["mean"], *by_role,
                     time.perf_counter() - started))
    where = "the demo mixtures" if args.demo else \
        f"{'validation' if args.validation else 'held-out'} {args.task.replace('_', ' + ')} mixtures"
    print(f"\nSI-SDRi in dB, {args.priors} priors, on {where} "
          f"(the mixture: 0 dB); full table with SI-SDR and SDR: {table}")
    print("| system | mixtures | SI-SDRi | speech | sound | wall time this run (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, count, mean, speech, sound, seconds in rows:
        print(f"| {name} | {count} | {mean:.2f} | {speech:.2f} | {sound:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    run_or_exit(main)
