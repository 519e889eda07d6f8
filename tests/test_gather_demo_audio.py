"""scripts/gather_demo_audio.py: which package files train which prior, and the Qt resource reader."""

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

from unasdiff.errors import UnasdiffError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gather_demo_audio.py"
spec = importlib.util.spec_from_file_location("gather_demo_audio", SCRIPT)
gather = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gather)


def qt_resource_file(files: dict[str, tuple[bytes, bool]], version: int = 2) -> bytes:
    """A Qt .rcc (binary format `version`) holding one folder `res` with files name -> (bytes, zlib?)."""
    entry = 22 if version >= 2 else 14
    names, data, tree = b"", b"", []

    def add_name(name):
        nonlocal names
        offset = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
        return offset

    def pad(raw):  # every entry has the format's size; the modification time is zero
        return raw + b"\0" * (entry - len(raw))

    tree.append(pad(struct.pack(">IHII", 0, 2, 1, 1)))  # root: one child, at index 1
    tree.append(pad(struct.pack(">IHII", add_name("res"), 2, len(files), 2)))
    for name, (content, compressed) in files.items():
        stored = struct.pack(">I", len(content)) + zlib.compress(content) if compressed else content
        tree.append(pad(struct.pack(">IHHHI", add_name(name), int(compressed), 0, 0, len(data))))
        data += struct.pack(">I", len(stored)) + stored
    header = 20
    tree_offset, data_offset = header, header + len(tree) * entry
    names_offset = data_offset + len(data)
    header_bytes = struct.pack(">4sIIII", b"qres", version, tree_offset, data_offset, names_offset)
    return header_bytes + b"".join(tree) + data + names


@pytest.mark.parametrize("version", [1, 2])
def test_qt_resources_are_unpacked_plain_and_compressed(tmp_path, version):
    files = {"bark.ogg": (b"OggS plain bytes", False), "cello.wav": (b"RIFF" + bytes(range(200)) * 5, True)}
    rcc = tmp_path / "animals.rcc"
    rcc.write_bytes(qt_resource_file(files, version))
    gather.unpack_qt_resources(rcc)
    for name, (content, _) in files.items():
        assert (tmp_path / "animals.rcc.d" / "res" / name).read_bytes() == content


def test_a_file_that_is_not_a_qt_resource_is_refused(tmp_path):
    bogus = tmp_path / "x.rcc"
    bogus.write_bytes(b"RIFF" + bytes(40))
    with pytest.raises(UnasdiffError, match="not a Qt resource file"):
        gather.unpack_qt_resources(bogus)


@pytest.mark.parametrize("package, path, role", [
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/cat_desc_fr.ogg", "speech"),
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/cat.ogg", "sound"),
    ("tuxpaint-stamps-default", gather.EXAMPLE_SOUND, None),                 # the bundled example stays out
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/symbols/seven.ogg", None),   # spoken numbers
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/cat.png", None),
    ("gcompris-qt-data", "usr/share/gcompris-qt/rcc/instruments.rcc.d/res/cello.ogg", "sound"),
    ("gcompris-qt-data", "usr/share/gcompris-qt/rcc/explore_world_music.rcc.d/res/china.ogg", None),
    ("gcompris-qt-data", "usr/share/gcompris-qt/rcc/core.rcc", None),         # the container itself
    ("lmms-common", "usr/share/lmms/samples/drums/snare01.ogg", "sound"),
    ("lmms-common", "usr/share/lmms/samples/bassloops/loop.ogg", None),       # synth loops: music
    ("klettres-data", "usr/share/klettres/fr/alpha/a.ogg", "speech"),
])
def test_each_package_file_gets_its_role(package, path, role):
    assert gather.role_of(package, path) == role
