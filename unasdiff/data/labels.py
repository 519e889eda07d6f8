"""Class names of the sound prior, in the label order the published checkpoint was trained with."""

import json
from functools import cache
from importlib import resources

from ..errors import UnasdiffError


@cache
def fsd_classes() -> tuple[str, ...]:
    """The 41 FSDKaggle2018 classes, index = label of the published sound prior (not alphabetical)."""
    order = json.loads(resources.files("unasdiff.data").joinpath("fsd_label_order.json").read_text())
    names = sorted(order, key=order.get)
    assert [order[n] for n in names] == list(range(len(names))), "label order must be 0..N-1"
    return tuple(names)


# Named class lists a prior config can refer to (`classes: fsdkaggle2018`).
CLASS_LISTS = {"fsdkaggle2018": fsd_classes}


def class_names(classes) -> tuple[str, ...] | None:
    """Resolve a prior config's `classes` entry: None, a registered list name, or a list of names."""
    if classes is None:
        return None
    if isinstance(classes, str):
        if classes not in CLASS_LISTS:
            raise UnasdiffError(f"unknown class list {classes!r}; known: {', '.join(CLASS_LISTS)}")
        return CLASS_LISTS[classes]()
    return tuple(classes)


def label_index(label, names: tuple[str, ...] | None, num_classes: int) -> int:
    """A label given as an index or a class name -> the index, checked against the prior."""
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if names is None or label not in names:
            known = "this prior has no class names" if names is None else "known: " + ", ".join(names)
            raise UnasdiffError(f"unknown class {label!r}; {known}")
        return names.index(label)
    index = int(label)
    if not 0 <= index <= num_classes:
        raise UnasdiffError(f"label {index} is out of range for a prior with {num_classes} classes "
                            f"(0..{num_classes - 1}, {num_classes} = null)")
    return index
