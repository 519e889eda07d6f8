"""FSDKaggle2018 preprocessing: the active spans of every clip of a split, as one JSON manifest.

    python sound_dataset_process/make_spans.py --fsd-root /data/FSDKaggle2018 --split test --out test_spans.json

Entries have the reference's format (wave_path relative to --fsd-root, wave_label, spans in seconds,
span_probs proportional to span length, wave_length). Clips without any active span are listed in
<out>.no_spans.txt and counted on the console, not silently dropped. The span definition is in
unasdiff/data/spans.py.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from unasdiff.data.corpora import fsd_clips
from unasdiff.data.labels import fsd_classes
from unasdiff.data.spans import span_manifest
from unasdiff.errors import UnasdiffError
from unasdiff.files import write_text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsd-root", required=True, help="folder holding FSDKaggle2018.audio_* and FSDKaggle2018.meta")
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--out", required=True, help="the JSON manifest to write")
    parser.add_argument("--all-clips", action="store_true", help="also train clips whose label was not verified")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.fsd_root).expanduser()
    try:
        clips = fsd_clips(root, args.split, verified_only=not args.all_clips)
        entries, silent = span_manifest(clips, root, fsd_classes(), progress=not args.no_progress)
    except UnasdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = write_text(args.out, json.dumps(entries, indent=1))
    report = out.with_name(out.name + ".no_spans.txt")
    if silent:
        write_text(report, "\n".join(silent) + "\n")
        print(f"{len(silent)} of {len(clips)} clips have no active span (listed in {report})")
    print(f"wrote {len(entries)} clips to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
