"""Reproducible test sets and scripts/evaluate.py, with tiny corpora and the tiny reference networks."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_config, make_fsd_tree, make_vctk_tree, system_folder
from omegaconf import OmegaConf

from unasdiff.audio import load_audio, rms_dbfs
from unasdiff.data.crops import ResampledCache
from unasdiff.data.mixtures import SourcePools, make_manifest, render, write_manifest
from unasdiff.errors import UnasdiffError
from unasdiff.evaluate import run
from unasdiff.metrics import leakage, sdr, si_sdr
from unasdiff.models import prior_config
from unasdiff.models.checkpoint import read_state_dict

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO.parent / "shared" / "data" / "unasdiff_demo"
TINY = ["priors.speech=tiny_speech", "priors.sound=tiny_sound", "sampler.steps=2", "window.seconds=0.5",
        "progress=false", "recipe.seconds=1.0", "data.cache_dir=null", "write_wavs=2"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    speakers = ("p225", "p227", "p232", "p257")  # p227 p232 p257 are test speakers
    return make_vctk_tree(root / "vctk", speakers=speakers, seconds=2.0), make_fsd_tree(root / "fsd", seconds=2.0)


def test_manifests_are_byte_identical_for_a_seed_and_follow_the_recipe(corpora, tmp_path):
    vctk, fsd = corpora
    pools = SourcePools(vctk, fsd)
    a, b, c = (write_manifest(make_manifest("speech_sound", ["speech", "sound"], pools, 4, seed=seed, seconds=1.0),
                              tmp_path / f"{name}.json") for name, seed in (("a", 7), ("b", 7), ("c", 8)))
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    manifest = json.loads(a.read_text())
    cache = ResampledCache(16000, None)
    for entry in manifest["mixtures"]:
        first, second = entry["sources"]
        assert first["path"].startswith("wav48_silence_trimmed/p2") and second["label"] in ("Bark", "Cello", "Knock")
        assert first["offset"] <= second["offset"] <= first["offset"] + first["length"]  # overlaps the previous one
        mixture, sources = render(entry, {"speech": vctk, "sound": fsd}, 16000, 1.0, cache)
        assert torch.allclose(mixture, sources.sum(0)) and sources.shape == (2, 16000)
        levels = rms_dbfs(sources)
        assert ((levels > -25.01) & (levels < -19.99)).all()


def test_distinct_classes_and_no_silent_sources_or_a_clear_error(corpora):
    vctk, fsd = corpora
    manifest = make_manifest("sound_sound", ["sound"] * 2, SourcePools(None, fsd), 4, seed=0, seconds=1.0)
    for entry in manifest["mixtures"]:  # the silent Knock clip is never used
        assert sorted(s["label"] for s in entry["sources"]) == ["Bark", "Cello"]
    with pytest.raises(UnasdiffError, match="no sound crop with at least 25% active audio .*Knock"):
        make_manifest("sound_3sound", ["sound"] * 3, SourcePools(None, fsd), 1, seed=0, seconds=1.0)
    with pytest.raises(UnasdiffError, match="not enough distinct speakers"):  # 3 test speakers in the tree
        make_manifest("x", ["speech"] * 4, SourcePools(vctk, None), 1, seed=0, seconds=1.0)
    with pytest.raises(UnasdiffError, match="set data.vctk_root"):
        make_manifest("x", ["speech"], SourcePools(None, fsd), 1, seed=0)


def _evaluate(corpora, results, *extra):
    vctk, fsd = corpora
    return run(compose_config("evaluate", TINY + [f"data.vctk_root={vctk}", f"data.fsd_root={fsd}",
                                                  f"results_root={results}", *extra]))


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _same_scores(rows, other, tolerance=0.01):
    """The same mixtures, fields and orders, and scores within `tolerance` dB (runs with other thread counts
    sum in another order)."""
    def numeric(value):
        try:
            return float(value)
        except ValueError:
            return None
    return len(rows) == len(other) and all(
        a.keys() == b.keys() and all(a[k] == b[k] if numeric(a[k]) is None or numeric(b[k]) is None
                                     else abs(numeric(a[k]) - numeric(b[k])) <= tolerance for k in a)
        for a, b in zip(rows, other))


def test_make_manifest_evaluate_resume_and_the_same_csv(corpora, tmp_path):
    common = ["task=speech_sound", "n_mixtures=3"]
    _evaluate(corpora, tmp_path / "whole", *common, "make_manifest=true")
    whole = system_folder(tmp_path / "whole", "speech_sound", "hybrid-mixture-2steps-1x")
    # a run stopped after one mixture, then resumed, its file begun by a version without the leakage columns
    _evaluate(corpora, tmp_path / "parts", *common, "make_manifest=true", "max_mixtures=1")
    parts = system_folder(tmp_path / "parts", "speech_sound", "hybrid-mixture-2steps-1x")
    older = [{k: v for k, v in row.items() if "leak" not in k} for row in _rows(parts / "scores.csv")]
    assert len(older) == 1
    with open(parts / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(older[0]))
        writer.writeheader()
        writer.writerows(older)
    _evaluate(corpora, tmp_path / "parts", *common)
    assert _rows(parts / "scores.csv") == [{k: v for k, v in row.items() if "leak" not in k}
                                           for row in _rows(whole / "scores.csv")]
    assert len(_rows(whole / "scores.csv")) == 3
    assert "leak" not in json.loads((parts / "summary.json").read_text())["scores"]["all"]
    assert (tmp_path / "parts" / "speech_sound" / "manifest.json").read_bytes() == \
        (tmp_path / "whole" / "speech_sound" / "manifest.json").read_bytes()
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["mixtures"] == 3 and set(summary["scores"]) >= {"all", "role:speech", "role:sound"}
    # the CSV's scores are those of the written wavs
    row = _rows(whole / "scores.csv")[0]
    wavs = whole / "wavs" / row["id"]
    truth = torch.stack([load_audio(wavs / f"true_{k}.wav", 16000)[0] for k in range(2)])
    est = torch.stack([load_audio(wavs / f"separated_{k}.wav", 16000)[0] for k in range(2)])
    assert torch.allclose(si_sdr(est, truth), torch.tensor([float(row["si_sdr_0"]), float(row["si_sdr_1"])]), atol=1e-3)
    assert torch.allclose(sdr(est, truth), torch.tensor([float(row["sdr_0"]), float(row["sdr_1"])]), atol=1e-2)
    assert torch.allclose(leakage(est, truth), torch.tensor([float(row["leak_0"]), float(row["leak_1"])]), atol=1e-2)
    assert "leak" in summary["scores"]["all"]
    with pytest.raises(UnasdiffError, match="exists: every run must score the same mixtures"):
        _evaluate(corpora, tmp_path / "whole", *common, "make_manifest=true")


def test_a_sampler_sweep_builds_one_table(corpora, tmp_path):
    for method in ("hybrid", "undiff"):
        folder = _evaluate(corpora, tmp_path, "task=speech_speech", "n_mixtures=2", f"sampler={method}",
                           f"make_manifest={method == 'hybrid'}")
    lines = (folder.parent / "table.md").read_text().splitlines()
    assert len(lines) == 4 and "hybrid-mixture-2steps-1x" in lines[2] and "undiff-mixture-2steps-1x" in lines[3]


def test_missing_files_and_wrong_checkpoints_are_named(corpora, tmp_path):
    _evaluate(corpora, tmp_path, "task=speech_sound", "n_mixtures=1", "make_manifest=true")
    with pytest.raises(UnasdiffError, match="manifest names 2 missing file.*wav48_silence_trimmed"):
        run(compose_config("evaluate", TINY + [f"results_root={tmp_path}", "data.vctk_root=/nowhere",
                                               "data.fsd_root=/nowhere", "task=speech_sound"]))
    with pytest.raises(UnasdiffError, match="does not fit this network config: 5 wrong shape: y_embedder_1"):
        _evaluate(corpora, tmp_path, "task=speech_sound", f"checkpoints.sound={REPO / 'tests/data/tiny_speech.pt'}")
    # a one-class checkpoint whose config names the 41 sound classes
    one_class = tmp_path / "one_class.pt"
    config = OmegaConf.to_container(prior_config("tiny_speech"))
    torch.save({"ema": read_state_dict(REPO / "tests/data/tiny_speech.pt"),
                "config": {"prior": {**config, "classes": "fsdkaggle2018"}}}, one_class)
    with pytest.raises(UnasdiffError, match="has 1 class.*not a sound prior"):
        _evaluate(corpora, tmp_path, "task=speech_sound", f"checkpoints.sound={one_class}")


def _scored(mixture_id: str, values: list[float], without: str = "-") -> dict:
    """A scores row of a mixture whose sources all score `values` in every metric, less the columns of `without`."""
    from unasdiff.evaluate import METRICS, metric_columns
    row = {"id": mixture_id, "group": f"{len(values)}src", "roles": " ".join(["sound"] * len(values)),
           **metric_columns({name: torch.tensor(values) for name in METRICS}), "seconds": "1.0"}
    return {key: value for key, value in row.items() if without not in key}


def test_a_mixture_with_more_sources_widens_the_scores_file_and_every_source_is_summarised(tmp_path):
    from unasdiff.evaluate import append_row, merged_rows, summarise
    path = tmp_path / "scores.csv"
    append_row(path, _scored("a", [1.0, 2.0]))
    append_row(path, _scored("b", [3.0, 4.0, 5.0]))
    append_row(path, _scored("c", [6.0, 7.0]))
    rows = _rows(path)
    assert [row["si_sdr_2"] for row in rows] == ["", "5.0000", ""]
    assert list(rows[0])[3:7] == ["si_sdr_0", "si_sdr_1", "si_sdr_2", "mean_si_sdr"]
    assert summarise(rows)["all"]["si_sdr"]["count"] == 7
    assert summarise(rows)["group:3src"]["si_sdr"]["mean"] == pytest.approx(4.0)
    # a file begun before a metric existed keeps its columns, for a wider row too
    older = tmp_path / "older.csv"
    append_row(older, _scored("a", [1.0, 2.0], without="leak"))
    append_row(older, _scored("b", [3.0, 4.0, 5.0]))
    assert all("leak_0" not in row and row["si_sdr_2"] in ("", "5.0000") for row in _rows(older))
    # two processes' parts of different widths merge into one file with every source
    parts = tmp_path / "parts"
    parts.mkdir()
    for rank, row in enumerate([_scored("a", [1.0, 2.0]), _scored("b", [3.0, 4.0, 5.0])]):
        append_row(parts / f"scores.rank{rank}.csv", row)
    merged = merged_rows(parts, 2, {"mixtures": [{"id": "a"}, {"id": "b"}]})
    assert summarise(merged)["all"]["si_sdr"]["count"] == 5
    assert [row["si_sdr_2"] for row in _rows(parts / "scores.csv")] == ["", "5.0000"]


def test_two_processes_split_the_manifest_and_merge(corpora, tmp_path):
    vctk, fsd = corpora
    _evaluate(corpora, tmp_path / "one", "task=speech_speech", "n_mixtures=2", "make_manifest=true")
    (tmp_path / "two" / "speech_speech").mkdir(parents=True)
    (tmp_path / "two" / "speech_speech" / "manifest.json").write_bytes(
        (tmp_path / "one" / "speech_speech" / "manifest.json").read_bytes())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534",
           str(REPO / "scripts" / "evaluate.py"), *TINY, f"data.vctk_root={vctk}", f"data.fsd_root={fsd}",
           f"results_root={tmp_path / 'two'}", "task=speech_speech", "device=cpu", f"hydra.run.dir={tmp_path / 'h'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (system_folder(tmp_path / run, "speech_speech", "hybrid-mixture-2steps-1x") for run in ("one", "two"))
    assert one.name == two.name and _same_scores(_rows(two / "scores.csv"), _rows(one / "scores.csv"))
    rows = _rows(one / "scores.csv")
    assert not _same_scores([{**rows[0], "mean_si_sdr": f"{float(rows[0]['mean_si_sdr']) + 0.1:.4f}"}, *rows[1:]], rows)


@pytest.mark.skipif(not DEMO.is_dir(), reason="shared/data/unasdiff_demo is not beside the repository")
def test_reference_outputs_on_the_demo_set_score_as_published(tmp_path):
    from omegaconf import OmegaConf

    from unasdiff.data.mixtures import demo_manifest
    from unasdiff.evaluate import score_reference_outputs
    score_reference_outputs(demo_manifest(DEMO), {"files": DEMO}, OmegaConf.create({"sample_rate": 16000}), tmp_path)
    scores = json.loads((tmp_path / "reference-published-outputs" / "summary.json").read_text())["scores"]
    published = {"01_1speech_1sound": 12.6, "02_1speech_2sound": 15.9, "03_2sound": 15.3, "04_3sound": 8.0,
                 "05_2speech": 8.4}
    for group, value in published.items():
        assert scores[f"group:{group}"]["si_sdr"]["mean"] == pytest.approx(value, abs=0.05)


def test_held_out_folders_and_an_unconditional_sound_prior(tmp_path):
    """The bundled priors' evaluation: <folder>/<speaker or class>/<clips> pools, a one-class sound prior."""
    import soundfile as sf
    from helpers import tone_bursts

    for role, groups in (("speech", ("p227", "p351")), ("sound", ("Bark", "Meow"))):
        for i, group in enumerate(groups):
            (tmp_path / role / group).mkdir(parents=True)
            sf.write(tmp_path / role / group / "clip.wav", tone_bursts(2.0, 16000, i + 5 * (role == "sound")), 16000)
    results = tmp_path / "results"
    run(compose_config("evaluate", TINY + [
        f"results_root={results}", "task=speech_sound", "n_mixtures=2", "make_manifest=true",
        f"data.speech_folder={tmp_path / 'speech'}", f"data.sound_folder={tmp_path / 'sound'}",
        "priors.sound=tiny_speech"]))
    manifest = json.loads((results / "speech_sound" / "manifest.json").read_text())
    for entry in manifest["mixtures"]:
        speech, sound = entry["sources"]
        assert speech["path"] in ("p227/clip.wav", "p351/clip.wav") and sound["label"] in ("Bark", "Meow")
    with open(system_folder(results, "speech_sound", "hybrid-mixture-2steps-1x") / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(row["labels"] == "- -" for row in rows)  # no label for a one-class prior
    # two sounds under one one-class prior are interchangeable: scored in the order that fits the true sources
    run(compose_config("evaluate", TINY + [
        f"results_root={results}", "task=sound_sound", "n_mixtures=2", "make_manifest=true",
        f"data.speech_folder={tmp_path / 'speech'}", f"data.sound_folder={tmp_path / 'sound'}",
        "priors.sound=tiny_speech"]))
    system = system_folder(results, "sound_sound", "hybrid-mixture-2steps-1x")
    for row in _rows(system / "scores.csv"):
        wavs = system / "wavs" / row["id"]
        truth = torch.stack([load_audio(wavs / f"true_{k}.wav", 16000)[0] for k in range(2)])
        est = torch.stack([load_audio(wavs / f"separated_{k}.wav", 16000)[0] for k in range(2)])
        best = max(si_sdr(est, truth).mean(), si_sdr(est.flip(0), truth).mean())
        assert float(row["mean_si_sdr"]) == pytest.approx(best.item(), abs=1e-3)
    with pytest.raises(UnasdiffError, match="no <group>/<audio files> folders under"):
        SourcePools(speech_folder=tmp_path / "sound" / "Bark")  # clips, but no group folders


def test_runs_that_differ_in_one_score_changing_setting_never_share_scores(corpora, tmp_path):
    base = ["task=speech_sound", "n_mixtures=1", "write_wavs=0"]
    first = _evaluate(corpora, tmp_path, *base, "make_manifest=true")
    assert json.loads((first / "settings.json").read_text())["sampler"]["consistency"] == "none"
    consistent = _evaluate(corpora, tmp_path, *base, "sampler.consistency=wiener")
    # the same file name, other weights: a newly trained checkpoint in the place of the old one
    retrained = tmp_path / "retrained" / "tiny_sound.pt"
    retrained.parent.mkdir()
    payload = torch.load(REPO / "tests/data/tiny_sound.pt", weights_only=True)
    payload["ema"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in payload["ema"].items()}
    torch.save(payload, retrained)
    other_weights = _evaluate(corpora, tmp_path, *base, f"checkpoints.sound={retrained}")
    again = _evaluate(corpora, tmp_path, *base)
    assert len({first, consistent, other_weights}) == 3 and again == first
    assert all(p.name.startswith("hybrid-mixture-2steps-1x-") for p in (first, consistent, other_weights))
    assert _rows(consistent / "scores.csv") != _rows(first / "scores.csv")
    # a folder named by hand that holds another setting's scores is refused, naming what differs
    with pytest.raises(UnasdiffError, match=r"holds scores of other settings \(differing: sampler.consistency\)"):
        _evaluate(corpora, tmp_path, *base, "sampler.consistency=equal", f"output_dir={first}")
    with pytest.raises(UnasdiffError, match=r"differing: priors.sound.checkpoint, priors.sound.sha256"):
        _evaluate(corpora, tmp_path, *base, f"checkpoints.sound={retrained}", f"output_dir={first}")
    (first / "settings.json").unlink()  # scores of unknown settings
    with pytest.raises(UnasdiffError, match="holds scores but no settings.json"):
        _evaluate(corpora, tmp_path, *base, f"output_dir={first}")


def test_the_demo_set_is_read_from_a_clone_of_the_reference_repository(tmp_path):
    """task=demo demo_root=<clone>: the reference repository's docs/audios/<task>/<nn>/ layout."""
    import soundfile as sf
    from helpers import tone_bursts

    clone = tmp_path / "unasdiff-reference"
    for task, k in (("01_1speech_1sound", 2), ("03_2sound", 2)):
        mix_dir = clone / "docs" / "audios" / task / "01"
        mix_dir.mkdir(parents=True)
        sources = [tone_bursts(1.0, 16000, i + 3 * k) * 0.1 for i in range(k)]
        for i, wave in enumerate(sources):
            sf.write(mix_dir / f"real_{i}.wav", wave, 16000)
            sf.write(mix_dir / f"sepa_{i}.wav", wave + 0.01 * sources[1 - i], 16000)
        sf.write(mix_dir / "mix.wav", sum(sources), 16000)
    (clone / "docs" / "audios" / ".DS_Store").write_bytes(b"\0")  # the clone has these; they are not tasks
    folder = run(compose_config("evaluate", TINY + [f"results_root={tmp_path / 'results'}", "task=demo",
                                                    f"demo_root={clone}"]))
    rows = _rows(folder / "scores.csv")
    assert [r["id"] for r in rows] == ["01_1speech_1sound-01", "03_2sound-01"]
    table = (folder.parent / "table.md").read_text()
    assert "reference (published outputs)" in table
    with pytest.raises(UnasdiffError, match=r"task=demo needs demo_root=PATH: a clone of the reference repository"):
        run(compose_config("evaluate", TINY + [f"results_root={tmp_path / 'results'}", "task=demo"]))
