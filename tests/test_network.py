"""The prior network against the reference implementation's vectors, and its loader."""

import ast

import pytest
import torch

from unasdiff.errors import UnasdiffError
from unasdiff.models import build_network, load_prior
from unasdiff.models.attention import Attention


@pytest.fixture(scope="module")
def vectors(data_dir):
    return torch.load(data_dir / "forward_vectors.pt", weights_only=True)


@pytest.mark.parametrize("kind", ["speech", "sound"])
@pytest.mark.parametrize("length", [4100, 8000, 12000])
def test_forward_matches_reference(kind, length, vectors, request):
    net = request.getfixturevalue(f"tiny_{kind}")
    v = vectors[f"{kind}_L{length}"]
    with torch.no_grad():
        out = net(v["x"], v["t"], v["label"])
    assert out.shape == v["out"].shape
    assert (out - v["out"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", ["speech", "sound"])
def test_full_size_has_published_keys_and_shapes(kind, data_dir):
    expected = {}
    for line in (data_dir / f"full_{kind}_keys.txt").read_text().splitlines():
        key, shape = line.split("\t")
        expected[key] = tuple(ast.literal_eval(shape))
    net = build_network(kind)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(37.2e6, rel=0.002)


# 4000 samples at hop 63 give 64 frames: the reference pads nothing and returns an empty tensor.
@pytest.mark.parametrize("length", [126, 127, 1000, 4000, 4001, 4095, 6111])
def test_every_length_returns_that_many_samples(length, tiny_speech):
    x = 0.1 * torch.randn(2, length)
    with torch.no_grad():
        out = tiny_speech(x, torch.tensor([500, 5]), None)
    assert out.shape == (2, length)
    assert torch.isfinite(out).all()


def test_published_stft_length_without_padding_returns_samples():
    # 64255 samples at hop 255 -> 253 frames (no padding): empty in the reference.
    net = build_network({"hidden_size": 8, "emb_dim": 16, "num_heads": 2, "depths": [1, 1, 1, 1, 1]}).eval()
    with torch.no_grad():
        out = net(0.1 * torch.randn(1, 64255), torch.tensor([100]))
    assert out.shape == (1, 64255)


def test_input_shorter_than_one_frame_is_refused(tiny_speech):
    with pytest.raises(ValueError, match="shorter than one STFT frame"):
        tiny_speech(torch.randn(1, 100), torch.tensor([5]))


def test_bf16_autocast_stays_close_to_float32(data_dir, vectors):
    fp32 = load_prior(data_dir / "tiny_sound.pt", "tiny_sound")
    bf16 = load_prior(data_dir / "tiny_sound.pt", {**_tiny_net("tiny_sound"), "precision": "bf16"})
    v = vectors["sound_L8000"]
    with torch.no_grad():
        a, b = fp32(v["x"], v["t"], v["label"]), bf16(v["x"], v["t"], v["label"])
    assert b.dtype == torch.float32
    assert not torch.equal(a, b)  # it really ran in bf16
    assert ((a - b).norm() / a.norm()).item() < 0.05


def _tiny_net(name):
    from omegaconf import OmegaConf

    from unasdiff.models import prior_config
    return OmegaConf.to_container(prior_config(name).net)


def test_attention_equals_explicit_softmax_with_rope():
    torch.manual_seed(1)
    attn = Attention(16, 2)
    x = torch.randn(3, 10, 16)
    n, s, d, h = 3, 10, 16, 2
    q, k, v = attn.to_qkv(x).view(n, s, 3, h, d // h).unbind(2)
    pos = torch.arange(s, dtype=torch.float32)[:, None]
    angle = pos * 10000.0 ** (-torch.arange(0, d // h, 2) / (d // h))  # [S, d/2]
    rot = torch.polar(torch.ones_like(angle), angle)[:, None]  # [S, 1, d/2]

    def rope(z):
        return torch.view_as_real(torch.view_as_complex(z.reshape(n, s, h, -1, 2).contiguous()) * rot).flatten(-2)

    q, k = rope(q).transpose(1, 2), rope(k).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, dim=-1)
    expected = attn.to_out((weights @ v.transpose(1, 2)).transpose(1, 2).reshape(n, s, d))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_new_network_predicts_zero_and_has_gradients():
    net = build_network({"hidden_size": 8, "emb_dim": 16, "num_heads": 2, "n_fft": 126, "hop_length": 63,
                         "win_length": 126, "num_classes": 3})
    x = torch.randn(2, 2000)
    out = net(x, torch.tensor([10, 900]), torch.tensor([0, 3]))
    assert torch.equal(out, torch.zeros_like(out))  # DiT-style zero init of the output
    out.sum().backward()
    assert net.final_layer.out_proj.weight.grad.abs().sum() > 0


# --- loading ---

def _state(data_dir):
    return torch.load(data_dir / "tiny_speech.pt", weights_only=True)["ema"]


@pytest.mark.parametrize("layout", ["published", "plain", "ddp", "model_only"])
def test_checkpoint_layouts_load(layout, data_dir, tmp_path, tiny_speech, vectors):
    state = _state(data_dir)
    payload = {
        "published": {"model": state, "ema": state},
        "plain": state,
        "ddp": {"model": {f"module.{k}": v for k, v in state.items()}},
        "model_only": {"model": state, "step": 3},
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    net = load_prior(path, "tiny_speech")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    v = vectors["speech_L4100"]
    with torch.no_grad():
        assert torch.allclose(net(v["x"], v["t"]), v["out"], atol=1e-4)


def test_missing_checkpoint_says_where(tmp_path):
    with pytest.raises(UnasdiffError, match="no checkpoint at .*put the prior's file there"):
        load_prior(tmp_path / "speech_source.pt", "speech")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode()}, path)
    with pytest.raises(UnasdiffError, match=r"refused .*Unsupported global.*could run code"):
        load_prior(path, "tiny_speech")
    assert "this would have run" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""])
def test_garbage_file_is_refused(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UnasdiffError, match=r"(refused|cannot read checkpoint) .*broken.pt"):
        load_prior(path, "tiny_speech")


def test_wrong_architecture_names_the_mismatches(data_dir):
    with pytest.raises(UnasdiffError) as err:
        load_prior(data_dir / "tiny_speech.pt", "tiny_sound")
    assert "wrong shape" in str(err.value) and "y_embedder_1.embedding_table.weight" in str(err.value)
    state = _state(data_dir)
    del state["conv_1.weight"]
    with pytest.raises(UnasdiffError, match="1 missing: conv_1.weight"):
        from unasdiff.models.checkpoint import load_weights
        load_weights(build_network("tiny_speech"), state)


def test_unknown_prior_config_is_named():
    with pytest.raises(UnasdiffError, match="no prior config 'speach'.*speech"):
        build_network("speach")
