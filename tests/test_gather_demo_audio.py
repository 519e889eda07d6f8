"""scripts/gather_demo_audio.py: which package files train which prior, and the Qt resource and SF2 readers."""

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


def riff(chunk: bytes, payload: bytes) -> bytes:
    return struct.pack("<4sI", chunk, len(payload)) + payload + b"\0" * (len(payload) & 1)


def soundfont_file(pcm: np.ndarray, samples: list[tuple], instruments: dict[str, list[int]]) -> bytes:
    """An SF2 holding int16 `pcm`, sample headers (name, start, end, loop start, loop end, rate, type) and
    instruments name -> sample indices, one zone per sample."""
    shdr = b"".join(struct.pack("<20sIIIIIBbHH", name.encode(), start, end, ls, le, rate, 60, 0, 0, kind)
                    for name, start, end, ls, le, rate, kind in samples + [("EOS", 0, 0, 0, 0, 0, 0)])
    inst, ibag, igen = b"", b"", b""
    zone = 0
    for name, indices in instruments.items():
        inst += struct.pack("<20sH", name.encode(), zone)
        for index in indices:
            ibag += struct.pack("<HH", zone, 0)
            igen += struct.pack("<HH", 53, index)  # sampleID
            zone += 1
    inst += struct.pack("<20sH", b"EOI", zone)
    ibag += struct.pack("<HH", zone, 0)
    sdta = b"sdta" + riff(b"smpl", pcm.astype("<i2").tobytes())
    pdta = b"pdta" + riff(b"inst", inst) + riff(b"ibag", ibag) + riff(b"igen", igen) + riff(b"shdr", shdr)
    info = b"INFO" + riff(b"ifil", struct.pack("<HH", 2, 1))
    body = b"sfbk" + riff(b"LIST", info) + riff(b"LIST", sdta) + riff(b"LIST", pdta)
    return struct.pack("<4sI", b"RIFF", len(body)) + body


def test_soundfont_samples_are_written_per_instrument_and_looped_notes_held(tmp_path, monkeypatch):
    monkeypatch.setattr(gather, "SOUNDFONT_NOTE_SECONDS", 0.5)
    rate = 8000
    pcm = (np.arange(3000) % 200 - 100).astype(np.int16) * 100
    samples = [("pluck", 0, 1000, 0, 0, rate, 1),             # mono, no loop: written as it is
               ("bow L", 1000, 1800, 1400, 1800, rate, 4),    # left channel with a loop: held to 0.5 s
               ("bow R", 1800, 2600, 2200, 2600, rate, 2)]    # its right channel: left out
    sf2 = tmp_path / "kit.sf2"
    sf2.write_bytes(soundfont_file(pcm, samples, {"Harp/GS": [0], "Cello": [1, 2], "Strings": [0, 1]}))
    gather.unpack_soundfont(sf2)
    written = sorted(str(p.relative_to(tmp_path / "kit.sf2.d")) for p in (tmp_path / "kit.sf2.d").rglob("*.wav"))
    assert written == ["Cello/0001-bow L.wav", "Harp-GS/0000-pluck.wav"]  # a shared sample is written once
    pluck, pluck_rate = sf.read(tmp_path / "kit.sf2.d" / "Harp-GS" / "0000-pluck.wav", dtype="int16")
    assert pluck_rate == rate and np.array_equal(pluck, pcm[:1000])
    bow, _ = sf.read(tmp_path / "kit.sf2.d" / "Cello" / "0001-bow L.wav")
    assert len(bow) == rate // 2
    loop = pcm[1400:1800] / 32768
    np.testing.assert_allclose(bow[800:1200], loop, atol=1e-4)  # the loop repeats after the note's own end
    assert abs(bow[-1]) < 1e-3 < abs(bow[:-rate // 5]).max()   # and fades out


def test_a_file_that_is_not_a_soundfont_is_refused(tmp_path):
    bogus = tmp_path / "x.sf2"
    bogus.write_bytes(b"RIFF" + bytes(4) + b"WAVE" + bytes(40))
    with pytest.raises(UnasdiffError, match="not an SF2 soundfont"):
        gather.unpack_soundfont(bogus)


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
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/bell.oga", "sound"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/audio-channel-front-left.oga", None),  # spoken
    ("sonic-pi-samples", "usr/share/sonic-pi/samples/tabla_na.flac", "sound"),
    ("sonic-pi-samples", "usr/share/sonic-pi/samples/ambi_choir.flac", None),   # voices
    ("sonic-pi-samples", "usr/share/sonic-pi/samples/loop_amen.flac", None),    # music loops
    ("hydrogen-drumkits", "usr/share/hydrogen/data/drumkits/Gimme/snare.flac", "sound"),
    ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2.d/Cello/0341-Cello E7(L).wav", "sound"),
    ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2.d/Ahh Choir/0001-Ahh.wav", None),
    ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2.d/Saw-GS/0001-Saw.wav", None),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/RailTrain2.wav", "sound"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/SportsCroud1.wav", None),    # a crowd: voices
    ("supertuxkart-data", "usr/share/games/supertuxkart/data/sfx/engine_large.ogg", "sound"),
    ("supertuxkart-data", "usr/share/games/supertuxkart/data/sfx/sara_airport_pa.ogg", None),   # an announcement
    ("supertuxkart-data", "usr/share/games/supertuxkart/data/music/cave.ogg", None),
    ("widelands-data", "usr/share/games/widelands/data/sound/farm/sheep_01.ogg", "sound"),
    ("widelands-data", "usr/share/games/widelands/data/sound/empire/taverns/meal_00.ogg", None),  # chatter
])
def test_each_package_file_gets_its_role(package, path, role):
    assert gather.role_of(package, path) == role


def reference_clone(root: Path) -> Path:
    """The reference repository's layout: audio_samples/{speech,sound} and docs/audios/<task>/<nn>/."""
    tone = 0.1 * np.sin(np.arange(4800) / 5).astype(np.float32)
    for path in ("audio_samples/speech/01/p227_001_mic1.flac", "audio_samples/sound/Bark/aa.wav",
                 "audio_samples/sound/Cello/bb.wav", "docs/audios/01_1speech_1sound/01/real_0.wav",
                 "docs/audios/03_2sound/01/real_0.wav"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / path, tone, 16000)
    return root


def test_held_out_clips_come_from_a_clone_of_the_reference_and_a_rerun_replaces_them(tmp_path):
    clone, out = reference_clone(tmp_path / "unasdiff"), tmp_path / "out"
    for _ in range(2):
        assert gather.gather_heldout(clone, out) == {"speech": 2, "sound": 2}
    held = sorted(str(p.relative_to(out)) for p in out.rglob("*.*"))
    assert held == ["heldout/sound/Bark/aa.wav", "heldout/sound/Cello/bb.wav",
                    "heldout/speech/demo-01_1speech_1sound-01/real_0.wav", "heldout/speech/p227/p227_001_mic1.flac"]


def test_a_wrong_reference_is_refused_before_anything_is_downloaded(tmp_path):
    import subprocess
    import sys

    debs = tmp_path / "debs"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--reference", str(tmp_path / "nowhere"), "--debs", str(debs),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--reference must be a clone of the reference repository" in proc.stderr
    assert not debs.exists() and not (tmp_path / "out").exists()


def test_a_rerun_keeps_converted_packages_and_converts_a_cut_off_one_again(tmp_path, monkeypatch):
    out, converted = tmp_path / "out", []

    def convert(package, deb, out_dir, seconds, licences):
        converted.append(package)
        (out_dir / "train" / "sound" / package).mkdir(parents=True, exist_ok=True)
        return {"sound": (3, 4.5)}

    monkeypatch.setattr(gather, "gather_package", convert)
    assert gather.gather_train("oxygen-sounds", None, out, (0.3, 30), tmp_path) == {"sound": (3, 4.5)}
    (out / "train" / "sound" / "gnome-audio" / "left-over.wav").parent.mkdir(parents=True)
    (out / "train" / "sound" / "gnome-audio" / "left-over.wav").write_bytes(b"")  # cut off: no .done record
    gather.gather_train("gnome-audio", None, out, (0.3, 30), tmp_path)
    assert gather.gather_train("oxygen-sounds", None, out, (0.3, 30), tmp_path) == {"sound": (3, 4.5)}
    assert converted == ["oxygen-sounds", "gnome-audio"]
    assert not (out / "train" / "sound" / "gnome-audio" / "left-over.wav").exists()
