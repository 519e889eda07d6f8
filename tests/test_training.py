"""Training a tiny prior on tiny corpora: resume, signals, two processes, and using the result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_SEPARATE, compose_config, make_fsd_tree, make_vctk_tree

from unasdiff.errors import UnasdiffError
from unasdiff.models import load_prior
from unasdiff.models.checkpoint import export_prior, read_state_dict
from unasdiff.pipeline import load_priors
from unasdiff.separate import run as separate_run
from unasdiff.training import diffusion_inputs, ema_decay_at, train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vctk(tmp_path_factory):
    return make_vctk_tree(tmp_path_factory.mktemp("vctk"))


def smoke(vctk_root, run_dir, *extra):
    return ["experiment=smoke", "data=vctk", f"data.vctk_root={vctk_root}", "data.cache_dir=null",
            f"run_dir={run_dir}", "log.progress=false", *extra]


def _tensors(state):
    if torch.is_tensor(state):
        yield state
    elif isinstance(state, dict):
        for v in state.values():
            yield from _tensors(v)
    elif isinstance(state, list):
        for v in state:
            yield from _tensors(v)


def assert_same_checkpoint(a, b, atol=0.0):
    a, b = (torch.load(p, weights_only=True) for p in (a, b))
    assert a["step"] == b["step"]
    for key in ("model", "ema", "optimizer"):
        for x, y in zip(_tensors(a[key]), _tensors(b[key]), strict=True):
            assert torch.allclose(x.float(), y.float(), atol=atol, rtol=0), key


def test_resume_continues_exactly(vctk, tmp_path):
    whole = train(compose_config("train_prior", smoke(vctk, tmp_path / "whole", "train.max_steps=6")))
    train(compose_config("train_prior", smoke(vctk, tmp_path / "parts", "train.max_steps=3")))
    resumed = train(compose_config("train_prior", smoke(vctk, tmp_path / "parts", "train.max_steps=6", "resume=true")))
    assert_same_checkpoint(whole, resumed)
    state = torch.load(resumed, weights_only=True)
    assert state["config"]["prior"]["net"]["hidden_size"] == 8 and state["bad_clips"] == 0
    assert list((tmp_path / "parts" / "tensorboard").glob("events.*"))


def test_resume_without_a_checkpoint_says_so(vctk, tmp_path):
    with pytest.raises(UnasdiffError, match="resume=true but there is no checkpoint"):
        train(compose_config("train_prior", smoke(vctk, tmp_path, "resume=true")))


def _launch(args, cwd):
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train_prior.py"), *args,
                             f"hydra.run.dir={cwd / 'hydra'}"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_sigterm_writes_a_checkpoint_and_resume_goes_on(vctk, tmp_path):
    run_dir = tmp_path / "run"
    proc = _launch(smoke(vctk, run_dir, "train.max_steps=100000", "checkpoint.every=100000", "train.num_workers=1"),
                   tmp_path)
    deadline = time.time() + 120
    while not list((run_dir / "tensorboard").glob("events.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)  # as a job scheduler does: the data worker hears it too
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    stopped = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 0 < stopped < 100000
    done = train(compose_config("train_prior", smoke(vctk, run_dir, f"train.max_steps={stopped + 2}", "resume=true")))
    assert torch.load(done, weights_only=True)["step"] == stopped + 2


def test_max_minutes_stops_with_a_checkpoint_that_resumes(vctk, tmp_path):
    run_dir = tmp_path / "run"
    # a budget shorter than one step: the first step finishes, is saved, and the run stops
    last = train(compose_config("train_prior", smoke(vctk, run_dir, "train.max_steps=100000", "checkpoint.every=100000",
                                                     "train.max_minutes=0.00001")))
    assert torch.load(last, weights_only=True)["step"] == 1
    done = train(compose_config("train_prior", smoke(vctk, run_dir, "train.max_steps=3", "resume=true")))
    assert torch.load(done, weights_only=True)["step"] == 3


def test_sigkill_never_leaves_a_half_written_checkpoint(vctk, tmp_path):
    run_dir = tmp_path / "run"
    proc = _launch(smoke(vctk, run_dir, "train.max_steps=100000", "checkpoint.every=1"), tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.05)
    for delay in (0.13, 0.29, 0.41):  # kill mid-run, at moments unrelated to the checkpoint cadence
        time.sleep(delay)
        torch.load(last, weights_only=True)  # always a whole file while it is being rewritten
    proc.kill()
    proc.wait()
    step = torch.load(last, weights_only=True)["step"]
    done = train(compose_config("train_prior", smoke(vctk, run_dir, f"train.max_steps={step + 1}", "resume=true")))
    assert torch.load(done, weights_only=True)["step"] == step + 1


def test_two_processes_match_one_with_the_same_global_batch(vctk, tmp_path):
    single = train(compose_config("train_prior", smoke(vctk, tmp_path / "one", "train.max_steps=3",
                                                        "train.batch_size=4", "device=cpu")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(REPO / "scripts" / "train_prior.py"),
           *smoke(vctk, tmp_path / "two", "train.max_steps=3", "train.batch_size=4", "device=cpu"),
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # same examples, noise and steps; only the order of the gradient all-reduce differs
    assert_same_checkpoint(single, tmp_path / "two" / "checkpoints" / "last.pt", atol=1e-6)


def test_a_trained_checkpoint_separates_without_conversion(vctk, tmp_path):
    ckpt = train(compose_config("train_prior", smoke(vctk, tmp_path / "speech", "train.max_steps=2")))
    net = load_prior(ckpt)  # its own network config
    assert net.num_classes == 1
    mix = tmp_path / "mix.wav"
    import soundfile as sf
    from helpers import tone_bursts
    sf.write(mix, tone_bursts(0.6, 16000, 9), 16000)
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={mix}", f"output_dir={tmp_path / 'out'}",
                                                      "task=speech_speech", f"checkpoints.speech={ckpt}"])
    assert separate_run(cfg) == 0
    assert len(list((tmp_path / "out").glob("source_*.wav"))) == 2

    # exported as the demo priors are (fp16 EMA weights + config): a quarter of the size, the same network
    exported = tmp_path / "exported.pt"
    info = export_prior(ckpt, exported)
    assert info["step"] == 2 and exported.stat().st_size < ckpt.stat().st_size / 3
    ema, stored = read_state_dict(ckpt, "ema"), torch.load(exported, weights_only=True)["ema"]
    assert stored.keys() == ema.keys() and all(torch.equal(stored[k], ema[k].half()) for k in ema)
    small = load_prior(exported)
    assert all(torch.equal(a, b.half().float()) for a, b in zip(small.state_dict().values(), net.state_dict().values()))
    # used as a sound prior, it is an unconditional one (its own config names no classes)
    cfg = compose_config("separate", TINY_SEPARATE + [f"mixture={mix}", f"output_dir={tmp_path / 'out2'}",
                                                      "labels=[null,auto]", f"checkpoints.sound={exported}"])
    assert separate_run(cfg) == 0
    summary = json.loads((tmp_path / "out2" / "separation.json").read_text())
    assert summary["sources"] == ["speech", "sound"] and summary["labels"] == [None, None]


def test_sound_prior_fine_tunes_from_a_checkpoint_with_more_classes(tmp_path):
    root = make_fsd_tree(tmp_path / "fsd")
    (root / "FSDKaggle2018.audio_train" / "aa05.wav").write_bytes(b"broken")  # training goes past it, counting it
    base = train(compose_config("train_prior", ["experiment=smoke", "prior=sound", "data=fsd", f"data.fsd_root={root}",
                                                "data.cache_dir=null", f"run_dir={tmp_path / 'base'}",
                                                "log.progress=false", "train.max_steps=2"]))
    grown = train(compose_config("train_prior", ["experiment=smoke", "prior=sound", "data=fsd", f"data.fsd_root={root}",
                                                 "data.cache_dir=null", f"run_dir={tmp_path / 'grown'}",
                                                 "log.progress=false", "train.max_steps=1", "prior.net.num_classes=52",
                                                 f"init_from={base}"]))
    old = torch.load(base, weights_only=True)["model"]["y_embedder_1.embedding_table.weight"]
    new = torch.load(grown, weights_only=True)["model"]["y_embedder_1.embedding_table.weight"]
    assert new.shape == (53, 16) and old.shape == (51, 16)
    assert torch.load(base, weights_only=True)["bad_clips"] == 1
    # before training: the 50 old classes keep their rows, the new ones and the null row start from the old null
    from unasdiff.models import build_network
    from unasdiff.training import load_initial_weights
    net = build_network({**torch.load(base, weights_only=True)["config"]["prior"]["net"], "num_classes": 52})
    load_initial_weights(net, base)
    table = net.y_embedder_1.embedding_table.weight.detach()
    assert torch.equal(table[:50], old[:50]) and torch.equal(table[50:], old[50].expand(3, -1))


def test_script_refuses_a_wrong_root_in_one_line(tmp_path):
    proc = _launch(["experiment=smoke", f"data.vctk_root={tmp_path}", f"run_dir={tmp_path / 'run'}"], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "error:" in err and "not a VCTK 0.92 root" in err and "Traceback" not in err


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_a_signal_to_one_of_two_processes_stops_both_with_a_checkpoint(vctk, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29535",
                             str(REPO / "scripts" / "train_prior.py"),
                             *smoke(vctk, run_dir, "train.max_steps=100000", "checkpoint.every=100000", "device=cpu"),
                             f"hydra.run.dir={tmp_path / 'h'}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((run_dir / "tensorboard").glob("events.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGTERM)  # only one rank hears it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] > 0


def test_the_ema_warms_up_so_a_short_run_is_not_its_initial_weights():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(10 ** 6, 0.999) == 0.999


def test_low_noise_focus_draws_that_share_of_steps_below_the_bound():
    positions = list(range(400))
    uniform, _, _ = diffusion_inputs(positions, seed=0, steps=200, length=8, label_dropout=0.0)
    focused, _, _ = diffusion_inputs(positions, seed=0, steps=200, length=8, label_dropout=0.0,
                                     low_noise_share=0.7, low_noise_below=40)
    assert (uniform < 40).float().mean() < 0.3  # about a fifth
    assert 0.7 < (focused < 40).float().mean() < 0.85  # 0.7 + 0.3 * 0.2
    assert focused.max() >= 100  # the rest still spans the schedule
    every, _, _ = diffusion_inputs(positions, seed=0, steps=200, length=8, label_dropout=0.0,
                                   low_noise_share=1.0, low_noise_below=10)
    assert every.max() < 10


def test_a_bad_low_noise_focus_is_refused(vctk, tmp_path):
    with pytest.raises(UnasdiffError, match="train.low_noise_focus needs share in"):
        train(compose_config("train_prior", smoke(vctk, tmp_path / "run", "train.low_noise_focus.share=1.5")))


def test_a_two_class_prior_trains_on_one_folder_per_class_and_serves_both_roles(tmp_path):
    import soundfile as sf
    from helpers import tone_bursts

    from unasdiff.data.corpora import class_folder_clips
    for k, (role, package) in enumerate([("speech", "letters"), ("speech", "stories"), ("sound", "drums")]):
        (tmp_path / role / package).mkdir(parents=True)
        sf.write(tmp_path / role / package / "a.wav", tone_bursts(1.2, 16000, k), 16000)
    folders = [tmp_path / "speech", tmp_path / "sound"]
    assert sorted((c.path.parent.name, c.label) for c in class_folder_clips(folders)) == [
        ("drums", 1), ("letters", 0), ("stories", 0)]
    assert [c.path.parent.name for c in class_folder_clips(folders, ("stories",))] == ["letters", "drums"]
    with pytest.raises(UnasdiffError, match="cannot exclude storys: no such sub-folder"):
        class_folder_clips(folders, ("storys",))

    ckpt = train(compose_config("train_prior", [
        "experiment=demo_two_class", "model=tiny", f"data.folders=[{folders[0]},{folders[1]}]", "data.cache_dir=null",
        f"run_dir={tmp_path / 'run'}", "log.progress=false", "train.max_steps=2", "train.batch_size=2",
        "train.num_workers=0"]))
    assert load_prior(ckpt).num_classes == 2
    mix = tmp_path / "mix.wav"
    sf.write(mix, tone_bursts(0.6, 16000, 9), 16000)
    cfg = compose_config("separate", TINY_SEPARATE + [
        f"mixture={mix}", f"output_dir={tmp_path / 'out'}", "priors.speech=demo_two_class",
        "priors.sound=demo_two_class", f"checkpoints.speech={ckpt}", f"checkpoints.sound={ckpt}",
        "sampler.label_guidance=2"])  # no labels: each role takes its own class
    assert separate_run(cfg) == 0
    summary = json.loads((tmp_path / "out" / "separation.json").read_text())
    assert summary["labels"] == [0, 1] and len(list((tmp_path / "out").glob("source_*.wav"))) == 2
    priors = load_priors(cfg, ["speech", "sound"], torch.device("cpu"))
    assert priors["speech"].net is priors["sound"].net  # one network, one batched call for both roles
