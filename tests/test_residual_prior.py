"""The template-residual prior: it starts as its template, trains only its network, and separates."""

import json

import pytest
import soundfile as sf
import torch
from helpers import TINY_SEPARATE, compose_config, tone_bursts
from omegaconf import OmegaConf

from unasdiff.config import REPO_ROOT, group_entry
from unasdiff.errors import UnasdiffError
from unasdiff.models import TemplateResidualPrior, build_network, load_prior
from unasdiff.models.checkpoint import export_prior, read_state_dict
from unasdiff.separate import run as separate_run
from unasdiff.training import train


@pytest.mark.parametrize("role", ["speech", "sound"])
def test_the_residual_configs_hold_the_bundled_template_and_demo_network_settings(role):
    residual = group_entry("prior", f"residual_{role}")
    assert residual.base_checkpoint == group_entry("prior", f"template_{role}").checkpoint
    assert OmegaConf.to_container(residual.net.templates) == OmegaConf.to_container(
        group_entry("prior", f"template_{role}").net)
    demo_network = group_entry("prior", f"demo_{role}").net
    assert OmegaConf.to_container(residual.net.network) == OmegaConf.to_container(demo_network)


def test_the_untrained_residual_prior_is_its_template_and_the_label_reaches_the_network():
    prior = build_network({"kind": "template_residual", "net": {
        "templates": {"templates": 3, "gains": 2, "n_fft": 256, "hop_length": 128},
        "network": {"hidden_size": 8, "emb_dim": 16, "num_heads": 2, "num_classes": 2, "depths": [1, 1, 1, 1, 1],
                    "fullband_channels": 4}}})
    assert isinstance(prior, TemplateResidualPrior) and prior.num_classes == 2 and prior.null_label == 2
    g = torch.Generator().manual_seed(0)
    prior.templates.shapes.copy_(torch.rand(3, 129, generator=g) + 0.1)
    x, t = torch.randn(2, 4000, generator=g), torch.tensor([5 * 3, 5 * 120])
    assert torch.equal(prior(x, t), prior.templates(x, t))  # the network's output starts at zero
    assert all(name.startswith("network.") for name, _ in prior.named_parameters())  # the template is fixed
    # guided samplers differentiate the prior with respect to x_t: through the template part too
    x_grad = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior(x_grad, t).pow(2).sum(), x_grad)
    (expected,) = torch.autograd.grad(prior.templates(x_grad, t).pow(2).sum(), x_grad)
    assert grad.abs().max() > 0 and torch.allclose(grad, expected)
    for weight in prior.network.parameters():  # as if trained: the zero-initialised layers too
        torch.nn.init.normal_(weight, std=0.1, generator=g)
    residual = prior(x, t, torch.tensor([0, 0])) - prior.templates(x, t)
    assert residual.abs().max() > 0
    assert torch.allclose(residual, prior.network(x, t, torch.tensor([0, 0])), atol=1e-6)
    assert not torch.allclose(prior(x, t, torch.tensor([0, 0])), prior(x, t, torch.tensor([1, 1])))


def _residual_run(folder, run_dir, *extra):
    return compose_config("train_prior", [
        "experiment=residual_speech", f"data.folder_root={folder}", "data.cache_dir=null", f"run_dir={run_dir}",
        "log.progress=false", "train.max_steps=2", "train.batch_size=2", "train.num_workers=0",
        "log.audio_every=0", *extra])


def test_training_starts_from_the_fitted_template_changes_only_the_network_and_separates(tmp_path):
    folder = tmp_path / "speech"
    folder.mkdir()
    for k in range(2):
        sf.write(folder / f"{k}.wav", tone_bursts(1.5, 16000, k), 16000)
    ckpt = train(_residual_run(folder, tmp_path / "run"))

    base = read_state_dict(REPO_ROOT / group_entry("prior", "residual_speech").base_checkpoint)
    trained = load_prior(ckpt)  # the prior config comes with the checkpoint
    assert isinstance(trained, TemplateResidualPrior)
    for key, value in base.items():
        assert torch.equal(trained.templates.state_dict()[key], value.float()), key
    assert trained.network.final_layer.out_proj.weight.abs().max() > 0  # the network trained

    # the bundled file: the network in fp16, the fitted variances (1e-6 .. 5e7, beyond fp16) as they are
    export_prior(ckpt, tmp_path / "residual_speech.pt")
    exported = torch.load(tmp_path / "residual_speech.pt", weights_only=True)["ema"]
    assert {exported[f"templates.{key}"].dtype for key in base} == {torch.float32}
    assert {v.dtype for k, v in exported.items() if k.startswith("network.")} == {torch.float16}
    x, t = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)), torch.tensor([5 * 20])
    assert torch.allclose(load_prior(tmp_path / "residual_speech.pt")(x, t), trained(x, t), atol=1e-3)

    mix = tmp_path / "mix.wav"
    sf.write(mix, tone_bursts(0.6, 16000, 9), 16000)
    cfg = compose_config("separate", TINY_SEPARATE + [
        f"mixture={mix}", f"output_dir={tmp_path / 'out'}", "priors.speech=residual_speech",
        f"checkpoints.speech={ckpt}"])
    assert separate_run(cfg) == 0
    summary = json.loads((tmp_path / "out" / "separation.json").read_text())
    assert summary["priors"]["speech"]["config"] == "residual_speech"


def test_a_base_checkpoint_that_is_not_a_template_is_refused_in_one_line(tmp_path):
    with pytest.raises(UnasdiffError, match=r"prior.base_checkpoint .*speech.pt: key \S+ is not in this network"):
        train(_residual_run(tmp_path, tmp_path / "run", "prior.base_checkpoint=checkpoints/demo/speech.pt"))
