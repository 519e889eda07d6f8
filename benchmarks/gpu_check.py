"""The prepared GPU check: the CUDA paths proved against the CPU, the published-size system timed, and a short
training run of a demo-size prior, in one command that needs nothing but the working tree.

    bash benchmarks/gpu_check.sh prepare                # once, here: packs/demo_train.npz and the wheels it needs
    bash benchmarks/gpu_check.sh run DIR                # on the bare GPU machine: this script, 8 minutes at most
    python benchmarks/gpu_check.py --smoke --out DIR    # on a CPU: tiny sizes, seconds (the test suite runs it)

Parts and their budgets in seconds (full mode; a part that reaches its budget skips what it has left, and the
report says which rows were skipped; --smoke runs every row whatever the time):
  correctness (90): the full-size network in the published sound prior's format (random weights from a seed),
      fp32 on the device against the CPU, bf16 autocast against fp32, one hybrid guided step against the CPU,
      the sampler's noise repeatable on the device generator, a training step with checkpoint and bit-exact
      resume on the device, and scripts/separate.py device=cuda end to end with full-size random priors;
  speed (180): forward and forward+backward per 4 s source at batch 1, 4, 16 in fp32 and bf16 (flash-attn
      where importable), a guided step of the two published-size priors with its extrapolation to a 4 s
      mixture at 200 steps and to 300 mixtures, and training steps per second at full and demo size;
  training (210): the demo-size two-class prior (experiment=demo_two_class) trained from the pack for the
      part's time (train.max_minutes), its EMA weights exported to DIR/demo_two_class.pt, to be judged on CPU
      with benchmarks/prior_denoising.py and benchmarks/small_priors.py.
DIR gets report.md and report.json (every figure, the device, torch and CUDA versions, PASS/FAIL per check).
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "scripts")]

import torch  # noqa: E402
from build_training_pack import build_pack, unpack_pack  # noqa: E402
from model_speed import measure as network_speed  # noqa: E402
from train_speed import measure as train_speed  # noqa: E402

from unasdiff.config import compose  # noqa: E402
from unasdiff.models import build_network, prior_config  # noqa: E402
from unasdiff.models.checkpoint import export_prior  # noqa: E402
from unasdiff.separation import DiffusionSchedule, ReconstructionObjective, SourcePriors, guided_step, make_rule  # noqa: E402
from unasdiff.separation import separate as separate_mixtures  # noqa: E402
from unasdiff.training import train  # noqa: E402

SAMPLE_RATE = 16000
MODES = {
    # the published sizes on the device
    "full": {"speech": "speech", "sound": "sound", "seconds": 4.0, "batches": [1, 4, 16],
             "precisions": ["fp32", "bf16"],
             "guided_batches": [1, 4], "train_sizes": [("full", 4), ("demo", 16)], "train_precision": "bf16",
             "budgets": {"correctness": 90, "speed": 180, "training": 210}, "train_overrides": [],
             "workers": 2, "separate_steps": 3, "separate_overrides": [], "repeats": 3, "enforce_budgets": True},
    # tiny networks on the CPU: every code path in seconds
    "smoke": {"speech": "tiny_speech", "sound": "tiny_sound", "seconds": 0.5, "batches": [1],
              "precisions": ["fp32"], "guided_batches": [1], "train_sizes": [("tiny", 2)], "train_precision": "fp32",
              "budgets": {"correctness": 120, "speed": 60, "training": 40},
              "train_overrides": ["model=tiny", "data.seconds=0.5", "train.batch_size=2"], "workers": 0,
              "separate_steps": 2, "separate_overrides": ["window.seconds=0.5", "auto_label.steps=[100]",
                                                          "auto_label.draws=1"], "repeats": 1,
              # every row runs however loaded the CPU is (the suite must not depend on it); the budgets
              # still size the training part
              "enforce_budgets": False},
}


class Part:
    """One part of the check: its rows, its checks and its budget."""

    def __init__(self, name: str, budget: float, report: dict, enforce: bool = True):
        self.name, self.budget, self.started, self.enforce = name, budget, time.perf_counter(), enforce
        self.rows, self.checks, self.skipped = [], [], []
        report["parts"][name] = {"budget_s": budget, "rows": self.rows, "checks": self.checks, "skipped": self.skipped}

    def time_left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def has_time(self, what: str) -> bool:
        if self.time_left() > 0 or not self.enforce:
            return True
        self.skipped.append(what)
        return False

    def row(self, key: dict, run) -> dict:
        """A measured row: key and run()'s figures, or the error that stopped it (out of memory, say)."""
        try:
            row = {**key, **run()}
        except Exception as err:  # reported in the table; the other rows still run
            row = {**key, "error": f"{type(err).__name__}: {str(err)[:120]}"}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.rows.append(row)
        print(f"[{self.name}] {json.dumps(row, default=str)[:300]}", flush=True)
        return row

    def check(self, name: str, run) -> None:
        """run() -> (passed, figures); an exception is a FAIL with its message."""
        if not self.has_time(name):
            return
        started = time.perf_counter()
        try:
            passed, figures = run()
        except Exception as err:  # a check that cannot run is a failed check, reported, not a crash
            passed, figures = False, {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-800:]}
        self.checks.append({"check": name, "result": "PASS" if passed else "FAIL",
                            "seconds": round(time.perf_counter() - started, 2), **figures})
        print(f"[{self.name}] {name}: {'PASS' if passed else 'FAIL'} {json.dumps(figures)[:300]}", flush=True)


def random_network(config: str, precision: str = "fp32", seed: int = 0) -> torch.nn.Module:
    """A network of a prior config with trained-like random weights (new ones start with zero adaLN)."""
    net = build_network({**prior_config(config).net, "precision": precision})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=generator))
    return net.eval().requires_grad_(False)


def on_device(net: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
    moved = copy.deepcopy(net).to(device)
    moved.precision = precision
    return moved


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm().clamp_min(1e-12)).item()


def correctness(mode: dict, device: torch.device, work: Path, pack: Path, part: Part, report: dict) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for these comparisons
    torch.backends.cudnn.allow_tf32 = False
    length = int(mode["seconds"] * SAMPLE_RATE)
    sound = random_network(mode["sound"])
    speech = random_network(mode["speech"], seed=1)
    x = 0.1 * torch.randn(2, length, generator=torch.Generator().manual_seed(2))
    t, label = torch.tensor([5 * 149, 5 * 10]), torch.tensor([min(23, sound.num_classes - 1), sound.null_label])
    on_cpu = sound(x, t, label)

    def forward_fp32():
        out = on_device(sound, device, "fp32")(x.to(device), t.to(device), label.to(device))
        error = (out.cpu() - on_cpu).abs().max().item()
        return error <= 1e-3 * on_cpu.abs().max().item(), {"max_abs_error": error,
                                                             "output_max": on_cpu.abs().max().item()}

    def forward_bf16():
        fp32 = on_device(sound, device, "fp32")(x.to(device), t.to(device), label.to(device))
        bf16 = on_device(sound, device, "bf16")(x.to(device), t.to(device), label.to(device))
        error = relative_error(bf16, fp32)
        return error < 0.05, {"relative_error": error}

    def hybrid_step():
        schedule = DiffusionSchedule.linear().respaced(mode["separate_steps"] * 10)
        objective, rule = ReconstructionObjective(), make_rule("hybrid", stride=200 / len(schedule))
        mixture = 0.1 * torch.randn(1, length, generator=torch.Generator().manual_seed(3))
        state = 0.5 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(4))
        noise = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(5))
        results = []
        for where in (torch.device("cpu"), device):
            nets = [on_device(speech, where, "fp32"), on_device(sound, where, "fp32")]
            priors = SourcePriors(nets, [None, 23 % sound.num_classes])
            results.append(guided_step(priors, schedule, len(schedule) - 1, state.to(where), mixture.to(where),
                                       noise.to(where), rule, objective).x_next.cpu())
        error = (results[1] - results[0]).abs().max().item()
        return error <= 1e-3 * results[0].abs().max().item(), {"max_abs_error": error}

    def device_noise():
        nets = [on_device(speech, device, "auto"), on_device(sound, device, "auto")]
        mixture = 0.1 * torch.randn(1, length, generator=torch.Generator().manual_seed(6)).to(device)
        runs = [separate_mixtures(mixture, nets, [None, 0], steps=2, generator=torch.Generator(device).manual_seed(0))
                for _ in range(2)]
        return bool(torch.equal(runs[0], runs[1])), {"generator_device": str(device)}

    def training_resume():
        folders = unpack_pack(pack, work / "pack")
        base = ["experiment=demo_two_class", f"data.folders=[{folders['speech']},{folders['sound']}]",
                "data.cache_dir=null", "log.progress=false", "log.audio_every=0", "checkpoint.keep_every=0",
                f"device={device.type}", f"train.num_workers={mode['workers']}", *mode["train_overrides"]]
        straight = train(compose("train_prior", base + [f"run_dir={work / 'straight'}", "train.max_steps=2"]))
        train(compose("train_prior", base + [f"run_dir={work / 'resumed'}", "train.max_steps=1"]))
        resumed = train(compose("train_prior", base + [f"run_dir={work / 'resumed'}", "train.max_steps=2",
                                                       "resume=true"]))
        a, b = (torch.load(p, weights_only=True)["model"] for p in (straight, resumed))
        difference = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        return difference == 0.0, {"max_abs_difference": difference, "steps": 2}

    def separate_end_to_end():
        checkpoints = {}
        for role, net in (("speech", speech), ("sound", sound)):
            checkpoints[role] = work / f"random_{role}.pt"
            torch.save({"ema": net.state_dict()}, checkpoints[role])
        out = work / "separated"
        cmd = [sys.executable, str(REPO / "scripts" / "separate.py"), "preset=published", f"device={device.type}",
               f"priors.speech={mode['speech']}", f"priors.sound={mode['sound']}",
               f"checkpoints.speech={checkpoints['speech']}", f"checkpoints.sound={checkpoints['sound']}",
               f"sampler.steps={mode['separate_steps']}", f"output_dir={out}", "progress=false",
               f"hydra.run.dir={work / 'hydra'}", *mode["separate_overrides"]]
        # the GPU machine has the tree but no installed package: the script finds unasdiff through the path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60.0, part.time_left()), env=env)
        files = sorted(p.name for p in out.glob("*"))
        passed = done.returncode == 0 and "Traceback" not in done.stderr and len(files) == 4
        return passed, {"returncode": done.returncode, "files": files, "stderr_tail": done.stderr[-300:]}

    if mode is MODES["full"]:
        published = {line.split("\t")[0] for line in (REPO / "tests/data/full_sound_keys.txt").read_text().splitlines()}
        part.check("published sound key list", lambda: (set(sound.state_dict()) == published,
                                                        {"keys": len(published)}))
    part.check("forward fp32 on the device = CPU", forward_fp32)
    part.check("bf16 autocast against fp32", forward_bf16)
    part.check("hybrid guided step on the device = CPU", hybrid_step)
    part.check("sampler noise repeatable on the device generator", device_noise)
    part.check("training step, checkpoint and bit-exact resume", training_resume)
    part.check("scripts/separate.py end to end", separate_end_to_end)
    report["flash_attn_importable"] = _flash_attn_importable()


def _flash_attn_importable() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def speed(mode: dict, device: torch.device, part: Part) -> None:
    settings = dict(prior_config(mode["sound"]).net)
    for step in ("forward", "fwd+bwd"):
        for precision in mode["precisions"]:
            for batch in mode["batches"]:
                if not part.has_time(f"{step} {precision} batch {batch}"):
                    continue
                key = {"what": step, "precision": precision, "batch": batch}
                row = part.row(key, lambda s=step, b=batch, p=precision: network_speed(
                    s, b, str(device), p, "sdpa", mode["repeats"], settings, mode["seconds"]))
                if "seconds" in row:
                    row["per_source_s"] = row["seconds"] / batch
    speech, sound = (random_network(mode[r]).to(device) for r in ("speech", "sound"))
    schedule = DiffusionSchedule.linear()
    rule, objective = make_rule("hybrid"), ReconstructionObjective()
    length = int(mode["seconds"] * SAMPLE_RATE)
    for batch in mode["guided_batches"]:
        if not part.has_time(f"guided step batch {batch}"):
            continue

        def guided(batch=batch):
            priors = SourcePriors([speech, sound], [None, 0])
            mixture = 0.1 * torch.randn(batch, length, device=device)
            state, noise = torch.randn(batch, 2, length, device=device), torch.randn(batch, 2, length, device=device)
            times = []
            for _ in range(mode["repeats"]):
                _sync(device)
                started = time.perf_counter()
                guided_step(priors, schedule, 150, state, mixture, noise, rule, objective)
                _sync(device)
                times.append(time.perf_counter() - started)
            per_step = sorted(times)[len(times) // 2]
            return {"seconds": per_step, "mixture_200_steps_s": 200 * per_step / batch,
                    "eval_300_mixtures_h": 300 / batch * 200 * per_step / 3600}

        part.row({"what": "guided step, two priors", "precision": "auto", "batch": batch}, guided)
    for size, batch in mode["train_sizes"]:
        if not part.has_time(f"training step {size}"):
            continue

        def step(size=size, batch=batch):
            row = train_speed(size, batch, mode["seconds"], device, mode["train_precision"], mode["repeats"])
            return {**row, "steps_per_s": 1 / row["seconds"]}

        part.row({"what": f"training step, {size}", "precision": mode["train_precision"], "batch": batch}, step)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training(mode: dict, device: torch.device, work: Path, pack: Path, out: Path, part: Part) -> None:
    minutes = max(0.05, (part.budget - 30) / 60)  # what is left after start-up and the export
    folders = unpack_pack(pack, work / "pack")

    def run():
        last = train(compose("train_prior", [
            "experiment=demo_two_class", f"data.folders=[{folders['speech']},{folders['sound']}]",
            "data.cache_dir=null", f"run_dir={work / 'demo_two_class'}", "log.progress=false", f"device={device.type}",
            "train.max_steps=1000000", f"train.max_minutes={minutes}", f"train.num_workers={mode['workers']}",
            *mode["train_overrides"]]))
        step = torch.load(last, weights_only=True)["step"]
        export_prior(last, out / "demo_two_class.pt")
        return step > 0, {"steps": step, "minutes": minutes, "weights": str(out / "demo_two_class.pt")}

    part.check("demo two-class prior trained and exported", run)


def write_report(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# GPU check ({report['mode']})", "", f"device: {report['device']}; torch {report['torch']}; "
             f"CUDA {report['cuda']}; flash-attn importable: {report.get('flash_attn_importable')}; "
             f"{report['seconds']:.0f} s in all", ""]
    for name, part in report["parts"].items():
        lines += [f"## {name} (budget {part['budget_s']} s)", ""]
        if part["checks"]:
            lines += ["| check | result | seconds | figures |", "| --- | --- | --- | --- |"]
            for c in part["checks"]:
                figures = {k: v for k, v in c.items() if k not in ("check", "result", "seconds", "trace")}
                lines.append(f"| {c['check']} | {c['result']} | {c['seconds']} | {json.dumps(figures)[:200]} |")
        if part["rows"]:
            columns = list(dict.fromkeys(k for row in part["rows"] for k in row))
            lines += ["| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]
            for row in part["rows"]:
                cells = [f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
                lines.append("| " + " | ".join(cells) + " |")
        if part["skipped"]:
            lines.append(f"\nskipped at the budget: {', '.join(part['skipped'])}")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds")
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "demo_train.npz",
                        help="training crops (scripts/build_training_pack.py)")
    parser.add_argument("--train-audio", type=Path,
                        help="--smoke: build a small pack from <dir>/speech and <dir>/sound first")
    args = parser.parse_args()
    mode = MODES["smoke" if args.smoke else "full"]
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; use --smoke on a CPU", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"mode": "smoke" if args.smoke else "full", "torch": torch.__version__, "cuda": torch.version.cuda,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU",
              "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pack = args.pack
        if args.train_audio:
            pack = work / "pack.npz"
            build_pack(args.train_audio, pack, minutes=0.1, seconds=mode["seconds"])
        if not pack.is_file():
            print(f"error: no training pack at {pack}: run scripts/build_training_pack.py first", file=sys.stderr)
            return 1
        def part(name):
            return Part(name, mode["budgets"][name], report, mode["enforce_budgets"])

        correctness(mode, device, work / "correctness", pack, part("correctness"), report)
        speed(mode, device, part("speed"))
        training(mode, device, work / "training", pack, args.out, part("training"))
    report["seconds"] = time.perf_counter() - started
    write_report(report, args.out)
    failed = [c["check"] for p in report["parts"].values() for c in p["checks"] if c["result"] == "FAIL"]
    print(f"report: {args.out / 'report.md'}; {'all checks PASS' if not failed else 'FAIL: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
