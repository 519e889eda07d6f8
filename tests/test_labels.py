import pytest

from unasdiff.data.labels import class_names, fsd_classes, label_index
from unasdiff.errors import UnasdiffError


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
