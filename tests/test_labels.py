import pytest
import torch

from unasdiff.data.labels import class_names, fsd_classes, label_index
from unasdiff.errors import UnasdiffError
from unasdiff.models import build_network
from unasdiff.separation.priors import SourcePriors


def test_published_label_order():
    names = fsd_classes()
    assert len(names) == 41
    assert names[0] == "Hi-hat" and names[23] == "Bark" and names[40] == "Glockenspiel"


def test_labels_by_name_or_index():
    names = class_names("fsdkaggle2018")
    assert label_index("Bark", names, 50) == 23
    assert label_index(7, names, 50) == 7
    assert label_index("7", names, 50) == 7
    with pytest.raises(UnasdiffError, match="unknown class 'Barking'"):
        label_index("Barking", names, 50)
    with pytest.raises(UnasdiffError, match="out of range"):
        label_index(51, names, 50)
    with pytest.raises(UnasdiffError, match="no class names"):
        label_index("Bark", None, 1)


def recording_forward(seen: dict, name: str):
    """A stand-in forward that records the label tensor each call receives and predicts zero noise."""
    def forward(x, t, label=None):
        seen.setdefault(name, []).append(label)
        return torch.zeros_like(x)
    return forward


def test_no_label_is_the_null_row_of_the_published_sound_prior_and_class_0_of_a_one_class_prior():
    sound, speech = build_network("sound"), build_network("speech")  # the published configs, random weights
    assert sound.null_label == 50 and fsd_classes()[0] == "Hi-hat"  # label 0 would be a real class
    seen = {}
    sound.forward, speech.forward = recording_forward(seen, "sound"), recording_forward(seen, "speech")
    SourcePriors([speech, sound, sound], [None, None, 23]).eps(torch.zeros(2, 3, 1024), 5 * 10)
    assert seen["speech"] == [None]  # the network's default: its one class, label 0
    assert seen["sound"][0].tolist() == [50, 23, 50, 23]  # batch of 2 mixtures x (null, Bark)
    # the reference's behaviour stays reachable by the explicit index
    seen.clear()
    SourcePriors([sound, sound], [0, 23]).eps(torch.zeros(1, 2, 1024), 5 * 10)
    assert seen["sound"][0].tolist() == [0, 23]
    # sources that all have no label still get the null row, not the network's label-0 default
    seen.clear()
    SourcePriors([sound, sound], [None, None]).eps(torch.zeros(1, 2, 1024), 5 * 10)
    assert seen["sound"][0].tolist() == [50, 50]
