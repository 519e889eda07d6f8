from pathlib import Path

import pytest
import torch

from unasdiff.models import load_prior

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_speech():
    return load_prior(DATA / "tiny_speech.pt", "tiny_speech")


@pytest.fixture(scope="session")
def tiny_sound():
    return load_prior(DATA / "tiny_sound.pt", "tiny_sound")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
