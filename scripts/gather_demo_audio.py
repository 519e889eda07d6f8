"""Gather the audio the bundled demo priors are trained and tested on (issue 6), without any dataset download.

    python scripts/gather_demo_audio.py --reference PATH      # -> data/demo/ (PATH: a clone of the reference)
    python scripts/gather_demo_audio.py --debs DIR ...        # use .deb files already downloaded into DIR

Training audio comes from Debian 12 packages (fetched with `apt-get download`, unpacked with `dpkg-deb -x`,
nothing installed):
  speech: real voices saying letters and syllables in 20 languages (klettres-data) and the spoken
          descriptions of the Tux Paint stamps in about 40 languages (tuxpaint-stamps-default);
  sound:  recorded sound effects of Tux Paint stamps (animals, vehicles, household), the instruments,
          animals and everyday sounds of GCompris (gcompris-qt-data, read out of its Qt resource files),
          the drum, instrument and effect samples of LMMS (lmms-common), Battle for Wesnoth, Frozen Bubble,
          the freedesktop, Oxygen, Yaru, Deepin and GNOME sound themes, the recorded samples of Sonic Pi,
          the acoustic drum kits of Hydrogen, the sampled acoustic instruments of the FluidR3 General
          MIDI soundfont (fluid-soundfont-gm, read out of its SF2 file), and the recorded effects of
          LinCity-NG, SuperTuxKart and Widelands (industry, traffic, engines, crafts, animals).
Held-out test audio, never used for training, comes from a clone of the reference repository
(`git clone https://github.com/RunwuShi/unasdiff`): its VCTK utterances (audio_samples/speech) as
heldout/speech/<speaker>/, the true speech of its demo mixtures (docs/audios) as heldout/speech/demo-*/, and its
FSDKaggle2018 test clips (audio_samples/sound) as heldout/sound/<class>/, the layout
`scripts/evaluate.py data.speech_folder=... data.sound_folder=...` reads. Without --reference only the training
audio is gathered.

Everything needed is checked before anything is downloaded. A rerun resumes: packages already converted
(listed in <out>/train/.done/) are kept, a package cut off half-way is converted again, and the held-out clips
and SOURCES.md are written anew.

Every training clip is written as 16 kHz mono 16-bit wav under <out>/train/<role>/<package>/, clips
outside [min, max] seconds or silent are left out, and <out>/SOURCES.md lists packages, versions,
licences (their Debian copyright files are copied next to it) and how much audio each gave.
"""

import argparse
import json
import logging
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from unasdiff.audio import AUDIO_SUFFIXES, is_silent, load_audio, write_audio  # noqa: E402
from unasdiff.config import REPO_ROOT  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.files import write_text  # noqa: E402

log = logging.getLogger("gather_demo_audio")
SAMPLE_RATE = 16000
# The bundled example's sound (examples/speech_sound): never trained on.
EXAMPLE_SOUND = "usr/share/tuxpaint/stamps/animals/birds/rooster.ogg"

# package -> (role, which files of it): the files are chosen by path and name, so a package's music,
# spoken numbers and other sources of the wrong kind stay out.
PACKAGES = {
    "klettres-data": ("speech", lambda p: "/klettres/" in p),
    "tuxpaint-stamps-default": None,  # both roles, see role_of()
    "wesnoth-1.16-data": ("sound", lambda p: "/sounds/" in p),
    "frozen-bubble-data": ("sound", lambda p: "/snd/" in p and "zik" not in p),
    # its audio-channel-* files are spoken phrases ("front left")
    "sound-theme-freedesktop": ("sound", lambda p: "/sounds/" in p and "audio-channel-" not in p),
    "oxygen-sounds": ("sound", lambda p: "/sounds/" in p),
    "yaru-theme-sound": ("sound", lambda p: "/sounds/" in p),
    "deepin-sound-theme": ("sound", lambda p: "/sounds/" in p),
    "gnome-audio": ("sound", lambda p: "/sounds/" in p),
    # recorded instruments, farm animals and everyday sounds; its world-music pieces and intro jingle are music
    "gcompris-qt-data": ("sound", lambda p: ".rcc.d/" in p and "explore_world_music" not in p and "/intro." not in p),
    # sampled drums, instruments and effects; the synth basses, pads and choirs are left out
    "lmms-common": ("sound", lambda p: any(f"/samples/{kind}/" in p
                                           for kind in ("drums", "beats", "instruments", "latin", "effects", "misc"))),
    # recorded drums, tabla, bells, guitar and everyday sounds; the choir, the voice-like basses and robots and
    # the music loops are left out
    "sonic-pi-samples": ("sound", lambda p: "/samples/" in p and not any(
        word in Path(p).name for word in ("ambi_choir", "voxy", "robot", "loop_"))),
    "hydrogen-drumkits": ("sound", lambda p: "/drumkits/" in p),
    # one folder per instrument of the soundfont (see unpack_soundfont); synthesisers and voices are left out
    "fluid-soundfont-gm": ("sound", lambda p: ".sf2.d/" in p and not any(
        word in Path(p).parent.name.lower() for word in SOUNDFONT_LEFT_OUT)),
    # recorded city sounds (industry, traffic, trains, farms, mills, fire); the ones of places full of
    # people (homes, schools, markets, crowds) may hold voices and are left out
    "lincity-ng-data": ("sound", lambda p: "/lincity-ng/sounds/" in p and not Path(p).name.startswith(
        ("Residential", "School", "University", "SportsCroud", "Market", "Commune", "Health", "Shanty"))),
    # engines, crashes, birds, rain, tools; the announcements, screams, restaurant chatter and jingles are left out
    "supertuxkart-data": ("sound", lambda p: "/data/sfx/" in p and Path(p).stem not in (
        "WilhelmScream", "ugh", "wee", "sara_airport_pa", "lenautile_restaurant", "gp_end", "last_lap_fanfare",
        "race_finish", "race_finish_victory", "track_intro", "start_race", "pre_start_race", "goal_scored")),
    # crafts (hammering, sawing, smithing, milling, woodcutting), farm and wild animals; the taverns' chatter,
    # the military and lobby messages are left out
    "widelands-data": ("sound", lambda p: "/data/sound/" in p and not any(
        word in p for word in ("/taverns/", "/military/", "lobby_", "message_", "click."))),
}
# Soundfont instruments that are synthesised or sung rather than a recorded instrument or sound.
SOUNDFONT_LEFT_OUT = ("voice", "vox", "choir", "synth", "saw", "sine", "square", "pad", "lead", "pulse", "808",
                      "electronic", "electric toms", "atmosphere", "fantasia", "crystal", "ice rain", "echo drops",
                      "goblin", "brightness", "soundtrack", "star theme", "sweep", "charang", "feedback", "reverse")
# A looped soundfont sample (a sustained note) is played out to this length, then faded out.
SOUNDFONT_NOTE_SECONDS = 2.0


def role_of(package: str, path: str) -> str | None:
    """'speech', 'sound' or None (not used) for one file of a package."""
    if Path(path).suffix.lower() not in AUDIO_SUFFIXES:
        return None
    if package == "tuxpaint-stamps-default":
        if "/stamps/symbols/" in path or path == EXAMPLE_SOUND:  # symbols: spoken numbers and letters
            return None
        return "speech" if "_desc" in Path(path).name else "sound"  # <stamp>_desc_<lang>.ogg: a spoken description
    role, wanted = PACKAGES[package]
    return role if wanted(path) else None


def fetch_debs(packages, folder: Path) -> dict[str, Path]:
    """package -> .deb file in `folder`, downloading what is missing with apt-get."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(folder.glob(f"{p}_*.deb"))]
    if missing:
        if not shutil.which("apt-get"):
            raise UnasdiffError(f"apt-get not found: download the .deb files of {', '.join(missing)} "
                                f"into {folder} and pass --debs {folder}")
        log.info("downloading %s", " ".join(missing))
        done = subprocess.run(["apt-get", "download", *missing], cwd=folder, capture_output=True, text=True)
        if done.returncode:
            raise UnasdiffError(f"apt-get download failed: {done.stderr.strip().splitlines()[-1]}")
    return {p: sorted(folder.glob(f"{p}_*.deb"))[-1] for p in packages}


def unpack_qt_resources(rcc: Path) -> None:
    """Write the files inside a Qt resource file (.rcc, Qt's binary format 1-3) to the folder `<rcc>.d/`."""
    blob = rcc.read_bytes()
    magic, version, tree, data, names = struct.unpack(">4sIIII", blob[:20])
    if magic != b"qres":
        raise UnasdiffError(f"{rcc} is not a Qt resource file")
    entry_size = 22 if version >= 2 else 14  # format 2 added an 8-byte modification time
    folder = rcc.with_name(rcc.name + ".d")

    def name_at(offset: int) -> str:
        length, = struct.unpack(">H", blob[names + offset:names + offset + 2])
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")  # after a 4-byte hash

    pending = [(0, folder)]
    while pending:
        index, path = pending.pop()
        start = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[start:start + 6])
        path = path / name_at(name_offset) if index else path
        if flags & 2:  # a directory: child count and index of its first child
            count, first = struct.unpack(">II", blob[start + 6:start + 14])
            pending += [(child, path) for child in range(first, first + count)]
            continue
        offset, = struct.unpack(">I", blob[start + 10:start + 14])
        size, = struct.unpack(">I", blob[data + offset:data + offset + 4])
        content = blob[data + offset + 4:data + offset + 4 + size]
        if flags & 4:
            log.warning("left out %s: zstd-compressed resources are not read", path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zlib.decompress(content[4:]) if flags & 1 else content)  # zlib: 4-byte size first


def riff_chunks(blob: bytes, start: int, end: int):
    """(id, data offset, size) of each RIFF chunk in blob[start:end], descending into LIST chunks."""
    while start < end:
        chunk, size = struct.unpack("<4sI", blob[start:start + 8])
        if chunk == b"LIST":
            yield from riff_chunks(blob, start + 12, start + 8 + size)
        else:
            yield chunk, start + 8, size
        start += 8 + size + (size & 1)


def unpack_soundfont(sf2: Path) -> None:
    """Write each instrument's recorded samples of an SF2 soundfont as `<sf2>.d/<instrument>/<sample>.wav`.

    Mono and left-channel samples only (a right channel repeats its left); a looped sample is played out to
    SOUNDFONT_NOTE_SECONDS by repeating its loop, as a synthesiser holds a note, with a 0.2 s fade-out.
    """
    blob = sf2.read_bytes()
    if blob[:4] != b"RIFF" or blob[8:12] != b"sfbk":
        raise UnasdiffError(f"{sf2} is not an SF2 soundfont")
    chunks = {chunk: (offset, size) for chunk, offset, size in riff_chunks(blob, 12, len(blob))}

    def records(chunk: bytes, layout: str) -> list[tuple]:
        offset, size = chunks[chunk]
        width = struct.calcsize(layout)
        return [struct.unpack(layout, blob[offset + i:offset + i + width]) for i in range(0, size, width)]

    pcm = np.frombuffer(blob, np.int16, chunks[b"smpl"][1] // 2, chunks[b"smpl"][0]).astype(np.float32) / 32768
    headers = records(b"shdr", "<20sIIIIIBbHH")[:-1]  # name, start, end, loop start, loop end, rate, ..., type
    instruments = records(b"inst", "<20sH")  # name, first zone; the last record ends the list
    zones = records(b"ibag", "<HH")  # first generator of each zone
    generators = records(b"igen", "<HH")  # (operator, amount)
    sample_id = 53  # the SF2 generator that names a zone's sample
    def file_name(raw: bytes) -> str:  # a zero-padded SF2 name, usable as a file name
        return raw.split(b"\0")[0].decode("latin-1").replace("/", "-").strip()

    folder = sf2.with_name(sf2.name + ".d")
    written = set()  # instruments share samples: each is written once, under the first instrument using it
    for (name, first_zone), (_, end_zone) in zip(instruments, instruments[1:]):
        instrument = file_name(name)
        samples = {amount for zone in range(first_zone, end_zone)
                   for operator, amount in generators[zones[zone][0]:zones[zone + 1][0]] if operator == sample_id}
        for index in sorted(samples - written):
            written.add(index)
            sample, start, end, loop_start, loop_end, rate, *_, kind = headers[index]
            if kind not in (1, 4):  # 1 mono, 2 right, 4 left, 8 linked; 0x8000 and up: ROM samples
                continue
            note = pcm[start:end]
            if start <= loop_start < loop_end <= end and loop_end - loop_start > rate // 100:
                loop = pcm[loop_start:loop_end]
                length = int(SOUNDFONT_NOTE_SECONDS * rate)
                repeats = max(0, int(np.ceil((length - len(note)) / len(loop))))
                note = np.concatenate([pcm[start:loop_end], np.tile(loop, repeats)])[:length]
                fade = min(len(note), rate // 5)
                note[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
            write_audio(folder / instrument / f"{index:04d}-{file_name(sample)}.wav", note, rate)


def gather_package(package: str, deb: Path, out: Path, seconds: tuple[float, float], licences: Path) -> dict:
    """Convert the package's chosen files; returns {role: (clips, seconds)}."""
    totals = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        root = Path(tmp)
        for rcc in list(root.rglob("*.rcc")):
            unpack_qt_resources(rcc)
        for sf2 in list(root.rglob("*.sf2")):
            unpack_soundfont(sf2)
        for copyright_file in root.glob("usr/share/doc/*/copyright"):
            shutil.copyfile(copyright_file, licences / f"{package}.copyright")
        chosen = sorted((p, role_of(package, str(p.relative_to(root)))) for p in root.rglob("*") if p.is_file())
        for path, role in tqdm([(p, r) for p, r in chosen if r], desc=package, unit="clip"):
            try:
                audio, _ = load_audio(path, SAMPLE_RATE)
            except UnasdiffError as err:
                log.warning("left out %s", err)
                continue
            duration = audio.shape[-1] / SAMPLE_RATE
            if not seconds[0] <= duration <= seconds[1] or is_silent(audio):
                continue
            # Keep the original suffix in the name: "beep.ogg" and "beep.wav" are different clips.
            relative = path.relative_to(root / "usr/share")
            target = out / "train" / role / package / relative.with_name(relative.name + ".wav")
            peak = audio.abs().max()
            if peak > 1:  # resampling overshoots a few full-scale clips: scale them rather than clip them
                audio = audio * (0.99 / peak)
            write_audio(target, audio.numpy(), SAMPLE_RATE)
            clips, total = totals.get(role, (0, 0.0))
            totals[role] = (clips + 1, total + duration)
    return totals


def reference_folders(reference: Path) -> tuple[Path, Path]:
    """(audio_samples, docs/audios) of a clone of the reference repository, checked."""
    samples, demo = reference / "audio_samples", reference / "docs" / "audios"
    for folder in (samples / "speech", samples / "sound", demo):
        if not folder.is_dir():
            raise UnasdiffError(f"{folder} not found: --reference must be a clone of the reference repository "
                                f"(git clone https://github.com/RunwuShi/unasdiff)")
    return samples, demo


def gather_heldout(reference: Path, out: Path) -> dict:
    """The reference repository's VCTK and FSDKaggle2018 clips as <out>/heldout/<role>/<speaker or class>/<file>."""
    samples, demo = reference_folders(reference)
    if (out / "heldout").exists():
        shutil.rmtree(out / "heldout")
    counts = {"speech": 0, "sound": 0}
    copies = [(flac, ("speech", flac.name.split("_")[0])) for flac in sorted((samples / "speech").rglob("*.flac"))]
    # the true speech sources of the paper's demo mixtures (VCTK test speakers; the speaker is not named)
    copies += [(wav, ("speech", f"demo-{wav.parent.parent.name}-{wav.parent.name}"))
               for wav in sorted(demo.glob("*speech*/*/real_0.wav"))]
    copies += [(wav, ("sound", wav.parent.name)) for wav in sorted((samples / "sound").glob("*/*.wav"))]
    for source, (role, group) in copies:
        target = out / "heldout" / role / group / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        counts[role] += 1
    return counts


def package_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True).stdout.strip()


def write_sources(out: Path, debs: dict, totals: dict, heldout: dict) -> None:
    lines = ["# Demo audio: origins and licences", "",
             "Written by `scripts/gather_demo_audio.py`. Training audio from Debian 12 packages (licences in",
             "`licences/<package>.copyright`); held-out audio from the reference repository's clips",
             "(VCTK 0.92, CC-BY 4.0; FSDKaggle2018 test set, Freesound clips under CC licences).", "",
             "| package | version | role | clips | minutes |", "| --- | --- | --- | --- | --- |"]
    for package, deb in debs.items():
        for role, (clips, seconds) in sorted(totals.get(package, {}).items()):
            lines.append(f"| {package} | {package_version(deb)} | {role} | {clips} | {seconds / 60:.1f} |")
    if heldout:
        lines += ["", f"Held out: {heldout['speech']} VCTK speech clips, {heldout['sound']} FSDKaggle2018 test clips.",
                  ""]
    (out / "SOURCES.md").write_text("\n".join(lines))


def check_tools(debs: Path, packages) -> None:
    """Refuse at once what would stop the run later: a missing tool, or .deb files neither there nor fetchable."""
    if not shutil.which("dpkg-deb"):
        raise UnasdiffError("dpkg-deb not found: it unpacks the Debian packages (apt-get install dpkg)")
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing and not shutil.which("apt-get"):
        raise UnasdiffError(f"apt-get not found: download the .deb files of {', '.join(missing)} into {debs} and "
                            f"pass --debs {debs}")


def gather_train(package: str, deb: Path, out: Path, seconds: tuple[float, float], licences: Path) -> dict:
    """One package's clips, or the totals of an earlier run that converted it completely (<out>/train/.done/)."""
    done = out / "train" / ".done" / f"{package}.json"
    if done.is_file():
        return {role: tuple(total) for role, total in json.loads(done.read_text()).items()}
    for role in ("speech", "sound"):  # a package cut off half-way is converted again from the start
        if (out / "train" / role / package).exists():
            shutil.rmtree(out / "train" / role / package)
    totals = gather_package(package, deb, out, seconds, licences)
    write_text(done, json.dumps(totals))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--debs", type=Path, default=Path.home() / ".cache" / "unasdiff" / "debs")
    parser.add_argument("--reference", type=Path,
                        help="a clone of the reference repository, for the held-out clips (audio_samples, docs/audios)")
    parser.add_argument("--min-seconds", type=float, default=0.3)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="longer files are music or ambiences")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("unasdiff.audio").setLevel(logging.WARNING)  # every clip is down-mixed and resampled
    if args.reference:
        reference_folders(args.reference)
    check_tools(args.debs, PACKAGES)
    args.out.mkdir(parents=True, exist_ok=True)
    debs = fetch_debs(PACKAGES, args.debs)
    licences = args.out / "licences"
    licences.mkdir(parents=True, exist_ok=True)
    totals = {p: gather_train(p, deb, args.out, (args.min_seconds, args.max_seconds), licences)
              for p, deb in debs.items()}
    heldout = gather_heldout(args.reference, args.out) if args.reference else None
    write_sources(args.out, debs, totals, heldout)
    for role in ("speech", "sound"):
        clips = sum(t[role][0] for t in totals.values() if role in t)
        minutes = sum(t[role][1] for t in totals.values() if role in t) / 60
        held = f", {heldout[role]} held-out clips in {args.out / 'heldout' / role}" if heldout else ""
        print(f"{role}: {clips} training clips ({minutes:.1f} min) in {args.out / 'train' / role}{held}")
    print(f"origins and licences: {args.out / 'SOURCES.md'}")


if __name__ == "__main__":
    run_or_exit(main)
