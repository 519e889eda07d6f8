"""The training stage of a source prior: eps-prediction on the DDPM schedule, one or many processes.

scripts/train_prior.py composes the config and calls `train(cfg)`. Per step: a global batch of crops
(unasdiff.data.crops) -> diffusion time t and noise eps per example -> x_t -> loss = ||net(x_t, 5t,
label) - eps||^2 -> AdamW with gradient clipping -> EMA of the weights. Labels are dropped to the
null class with probability `label_dropout`, so a conditional prior also learns p(x).
Under torchrun the same code runs DistributedDataParallel (NCCL on GPU, gloo on CPU); rank 0 writes.
"""

import copy
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .config import REPO_ROOT
from .data.corpora import class_folder_clips, folder_clips, fsd_clips, vctk_clips
from .data.crops import CropStream, StreamBatches
from .diffusion import DiffusionSchedule
from .errors import UnasdiffError
from .files import writable_folder
from .models import build_network
from .models.checkpoint import atomic_torch_save, read_state_dict
from .runtime import start_processes, tune_cpu_allocator

log = logging.getLogger(__name__)


def training_clips(data: DictConfig):
    if data.kind == "vctk":
        return vctk_clips(data.vctk_root, data.split, data.mic)
    if data.kind == "fsd":
        return fsd_clips(data.fsd_root, data.split, data.verified_only)
    if data.kind == "folder":
        return folder_clips(data.folder_root, data.label, tuple(data.exclude))
    if data.kind == "folders":
        return class_folder_clips(data.folders, tuple(data.exclude))
    raise UnasdiffError(f"data.kind must be vctk, fsd, folder or folders, not {data.kind!r}")


def diffusion_inputs(positions: list[int], seed: int, steps: int, length: int, label_dropout: float,
                     low_noise_share: float = 0.0, low_noise_below: int = 0):
    """Per example, from its stream position alone: time step, noise, and whether its label is dropped.

    t is uniform over the schedule, except that a share `low_noise_share` of examples draws it from
    [0, low_noise_below): at the training level (-25..-20 dBFS against unit noise) x_t keeps a usable
    signal-to-noise ratio only in the first few dozen steps, where a uniform t spends a fifth of its examples."""
    t, noise, drop = [], [], []
    for p in positions:
        g = torch.Generator().manual_seed(int(np.random.default_rng([seed, p, 2]).integers(2**62)))
        t.append(int(torch.randint(steps, (1,), generator=g)))
        noise.append(torch.randn(length, generator=g))
        drop.append(bool(torch.rand(1, generator=g) < label_dropout))
        if low_noise_share > 0 and float(torch.rand(1, generator=g)) < low_noise_share:
            t[-1] = int(torch.randint(low_noise_below, (1,), generator=g))
    return torch.tensor(t), torch.stack(noise), torch.tensor(drop)


def diffusion_loss(net, x0, t, noise, labels, schedule: DiffusionSchedule, valid):
    """Mean over valid examples of the mean squared error of the predicted noise."""
    pred = net(schedule.noised(x0, t, noise), t * schedule.time_scale, labels)
    per_example = (pred.float() - noise).pow(2).mean(dim=-1)
    return (per_example * valid).sum() / valid.sum().clamp_min(1)


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """A scheduler's SIGTERM (or a Ctrl-C) reaches every process of the job: a data worker that died of it
    would crash the main process before it writes its last checkpoint. Workers ignore those signals and
    stop when the main process shuts the loader down."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay warms up, (1 + step) / (10 + step) until it reaches `decay`: without the warm-up the EMA
    of a short run is still mostly the initial weights (0.999 ** 1000 = 37% of them after 1000 steps)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), net.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def load_initial_weights(net: torch.nn.Module, path, setting: str = "init_from") -> None:
    """Fine-tuning start: every tensor of the checkpoint; a class table that grew keeps its old rows.
    `setting` names the config entry that gave `path`, for the errors."""
    path = Path(path).expanduser()
    state = read_state_dict(path if path.is_absolute() or path.exists() else REPO_ROOT / path)
    own = net.state_dict()
    for key, value in state.items():
        if key not in own:
            raise UnasdiffError(f"{setting} {path}: key {key} is not in this network")
        if value.shape != own[key].shape:
            if not key.endswith("embedding_table.weight") or value.shape[1:] != own[key].shape[1:]:
                raise UnasdiffError(f"{setting} {path}: {key} has shape {tuple(value.shape)}, "
                                    f"this network {tuple(own[key].shape)}")
            # old classes keep their rows; new classes start from the old null row
            grown = own[key].clone()
            rows = min(len(value) - 1, len(grown) - 1)
            grown[:rows] = value[:rows]
            grown[rows:] = value[-1]
            value = grown
        own[key] = value
    net.load_state_dict(own)


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop checkpoints and exits at the end of the step."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self, proc, also: bool = False) -> bool:
        """Whether any process was asked to stop (by a signal, or by `also`: its time is up): all ranks leave at
        the same step, or one would wait forever in the next gradient all-reduce."""
        wanted = self.requested or also
        if proc.world == 1:
            return wanted
        flag = torch.tensor([int(wanted)], device=proc.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def checkpoint_payload(net, ema, optimizer, step: int, bad_clips: int, cfg: DictConfig) -> dict:
    """The published {"model", "ema"} layout plus what resuming needs."""
    return {"model": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "bad_clips": bad_clips, "rng": {"seed": cfg.seed, "scheme": "stream position"},
            "config": OmegaConf.to_container(cfg, resolve=True)}


def train(cfg: DictConfig) -> Path:
    """Run (or resume) training; returns the path of the last checkpoint."""
    focus = cfg.train.low_noise_focus
    if not (0.0 <= focus.share <= 1.0 and 1 <= focus.below <= cfg.diffusion.steps):
        raise UnasdiffError(f"train.low_noise_focus needs share in [0, 1] and below in 1..{cfg.diffusion.steps}, "
                            f"got share={focus.share}, below={focus.below}")
    proc = start_processes(cfg.device)
    if proc.device.type == "cpu":
        tune_cpu_allocator()
    run_dir = writable_folder(cfg.run_dir, "run_dir") if proc.is_main else Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    torch.manual_seed(cfg.seed)

    net = build_network(cfg.prior).to(proc.device)
    if cfg.init_from and not cfg.resume:
        load_initial_weights(net, cfg.init_from)
    elif cfg.prior.get("base_checkpoint") and not cfg.resume:  # a template-residual prior starts as its template
        load_initial_weights(net.templates, cfg.prior.base_checkpoint, "prior.base_checkpoint")
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                                  weight_decay=cfg.train.weight_decay)
    step, bad_clips = 0, 0
    if cfg.resume:
        if not last.is_file():
            raise UnasdiffError(f"resume=true but there is no checkpoint at {last}; start without resume "
                                f"or set run_dir to the run to continue")
        state = torch.load(last, map_location=proc.device, weights_only=True)
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, bad_clips = int(state["step"]), int(state.get("bad_clips", 0))
        if proc.is_main:
            log.info("resumed %s at step %d", last, step)
    model = DistributedDataParallel(net) if proc.world > 1 else net

    data = cfg.data
    clips = training_clips(data)
    if net.num_classes > 1 and any(c.label is None for c in clips):
        raise UnasdiffError(f"prior {cfg.prior.name} has {net.num_classes} classes but the data has clips without "
                            f"a class; set data.label (folder data) to the class these clips train")
    dataset = CropStream(clips, data.sample_rate, data.seconds, tuple(data.level_dbfs), data.cache_dir, cfg.seed)
    batches = StreamBatches(cfg.train.batch_size, step, proc.rank, proc.world)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=cfg.train.num_workers,
                                              persistent_workers=cfg.train.num_workers > 0,
                                              worker_init_fn=leave_stop_signals_to_the_main_process))
    schedule = DiffusionSchedule.linear(cfg.diffusion.steps, cfg.diffusion.beta_start, cfg.diffusion.beta_end)
    label_dropout = cfg.train.label_dropout if net.num_classes > 1 else 0.0

    writer = None
    if proc.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_dir.glob(".*.tmp"):  # a write cut short by SIGKILL; last.pt itself is whole
            stale.unlink()
        OmegaConf.save(cfg, run_dir / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(run_dir / "tensorboard", purge_step=step)
        log.info("training %s (%.2f M parameters) on %d clips, %d process(es), device %s",
                 cfg.prior.name, sum(p.numel() for p in net.parameters()) / 1e6, len(dataset), proc.world, proc.device)

    def save(at_step):
        if proc.is_main:
            payload = checkpoint_payload(net, ema, optimizer, at_step, bad_clips, cfg)
            atomic_torch_save(payload, last)
            if cfg.checkpoint.keep_every and at_step % cfg.checkpoint.keep_every == 0:
                atomic_torch_save(payload, ckpt_dir / f"step_{at_step:08d}.pt")

    progress = tqdm(total=cfg.train.max_steps, initial=step, desc="training", unit="step",
                    disable=not (proc.is_main and cfg.log.progress))
    started, first_step = time.perf_counter(), step
    with StopRequest() as stop:
        while step < cfg.train.max_steps:
            waves, labels, valid, positions = next(loader)
            t, noise, drop = diffusion_inputs(positions.tolist(), cfg.seed, schedule.num_train_steps, waves.shape[-1],
                                              label_dropout, focus.share, focus.below)
            # clips without a class train class 0, which separation passes for label None to a one-class prior
            labels = torch.where(drop, torch.full_like(labels, net.null_label), labels.clamp_min(0))
            waves, noise, t, labels = (x.to(proc.device) for x in (waves, noise, t, labels))
            valid = valid.to(proc.device, torch.float32)
            loss = diffusion_loss(model, waves, t, noise, labels, schedule, valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
            optimizer.step()
            update_ema(ema, net, ema_decay_at(step, cfg.train.ema_decay))
            step += 1
            bad_clips += int((valid == 0).sum())
            if not math.isfinite(loss.item()):
                raise UnasdiffError(f"the loss became {loss.item()} at step {step}; lower train.lr "
                                    f"(the last good checkpoint is {last})")
            progress.update(1)
            if writer is not None and step % cfg.log.every == 0:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/grad_norm", grad_norm.item(), step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                writer.add_scalar("train/bad_clips", bad_clips, step)
                writer.add_scalar("train/steps_per_second", (step - first_step) / (time.perf_counter() - started), step)
                progress.set_postfix(loss=f"{loss.item():.4f}")
            if writer is not None and cfg.log.audio_every and step % cfg.log.audio_every == 0:
                log_audio(writer, ema, waves, t, noise, labels, schedule, data.sample_rate, step)
            out_of_time = bool(cfg.train.max_minutes) and time.perf_counter() - started > 60 * cfg.train.max_minutes
            stopping = stop.agreed(proc, out_of_time)
            if step % cfg.checkpoint.every == 0 or step == cfg.train.max_steps or stopping:
                save(step)
            if stopping:
                if proc.is_main:
                    why = f"train.max_minutes={cfg.train.max_minutes}" if out_of_time else "a signal"
                    log.info("stopped by %s at step %d; resume with resume=true", why, step)
                break
    progress.close()
    if writer is not None:
        writer.close()
    if proc.world > 1:
        dist.destroy_process_group()
    return last


@torch.no_grad()
def log_audio(writer, ema, waves, t, noise, labels, schedule, sample_rate, step, count: int = 2):
    """A few training crops and the EMA network's one-shot estimate of them from their noisy version."""
    t = t[:count]
    x_t = schedule.noised(waves[:count], t, noise[:count])
    x0 = schedule.denoised(x_t, t, ema(x_t, t * schedule.time_scale, labels[:count]))
    for i in range(min(count, len(waves))):
        writer.add_audio(f"audio/{i}_clean", waves[i].cpu(), step, sample_rate)
        writer.add_audio(f"audio/{i}_denoised_from_step_{int(t[i])}", x0[i].cpu(), step, sample_rate)
