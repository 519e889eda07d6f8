"""Rebuild the bundled example (mixture.wav, true_0_speech.wav, true_1_sound.wav) from its two clips.

    python examples/speech_sound/make_example.py \
        --vctk-clip ../unasdiff-reference/audio_samples/speech/02/p351_006_mic1.flac \
        --rooster ROOSTER.ogg

ROOSTER.ogg is usr/share/tuxpaint/stamps/animals/birds/rooster.ogg of the Debian 12 package
tuxpaint-stamps-default (`apt-get download tuxpaint-stamps-default && dpkg-deb -x tuxpaint-stamps-default_*.deb x`).
The paper's recipe at 16 kHz: a 4 s speech crop around an active span, the sound placed inside the speech,
each source scaled to an RMS drawn from U(-25, -20) dBFS on the 4 s canvas; a fixed seed.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from unasdiff.audio import load_audio, write_audio  # noqa: E402
from unasdiff.data.spans import active_spans, crop_start, span_probabilities  # noqa: E402

SAMPLE_RATE = 16000
SECONDS = 4.0
SEED = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vctk-clip", type=Path, required=True)
    parser.add_argument("--rooster", type=Path, required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    canvas = int(SECONDS * SAMPLE_RATE)
    speech = load_audio(args.vctk_clip, SAMPLE_RATE)[0].numpy()
    spans = active_spans(speech, SAMPLE_RATE)
    start = crop_start(len(speech), canvas, spans, span_probabilities(spans), SAMPLE_RATE, rng)
    speech = speech[start:start + canvas]
    sound = load_audio(args.rooster, SAMPLE_RATE)[0].numpy()
    placed = np.zeros(canvas, dtype=np.float32)
    offset = int(rng.integers(0, canvas - len(sound)))
    placed[offset:offset + len(sound)] = sound
    sources = []
    for source in (speech, placed):
        level = rng.uniform(-25.0, -20.0)
        sources.append(source * (10 ** (level / 20) / np.sqrt(np.mean(source.astype(np.float64) ** 2))))
    folder = Path(__file__).parent
    write_audio(folder / "true_0_speech.wav", sources[0], SAMPLE_RATE, "float")
    write_audio(folder / "true_1_sound.wav", sources[1], SAMPLE_RATE, "float")
    write_audio(folder / "mixture.wav", sources[0] + sources[1], SAMPLE_RATE, "float")
    print(f"speech from {start / SAMPLE_RATE:.2f} s of {args.vctk_clip.name}, sound at {offset / SAMPLE_RATE:.2f} s")


if __name__ == "__main__":
    main()
