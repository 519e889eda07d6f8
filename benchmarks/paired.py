"""Paired comparison of two evaluated systems on the same mixtures: is B better than A, beyond the noise?

    python benchmarks/paired.py results/validation/speech_sound/SYSTEM_A results/validation/speech_sound/SYSTEM_B

Reads each system's scores.csv (scripts/evaluate.py, benchmarks/small_priors.py), keeps the mixtures both
have scored, and prints per system the mean SI-SDRi, and the paired difference B - A: its mean over
mixtures with the standard error (std / sqrt(n)), and on how many mixtures B is better. Differences between
systems on a few dozen mixtures are dominated by a few mixtures where the sources swap; the paired
difference removes what the mixtures share.
"""

import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402


def mean_and_error(diffs: list[float]) -> tuple[float, float]:
    """The mean of paired differences and its standard error (std / sqrt(n); 0 for one difference)."""
    mean = sum(diffs) / len(diffs)
    return mean, math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1) / len(diffs))


def scores(folder: Path, column: str) -> dict[str, float]:
    path = folder / "scores.csv"
    if not path.is_file():
        raise UnasdiffError(f"no scores.csv in {folder}: pass a system's result folder (results/<...>/<task>/<system>)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        raise UnasdiffError(f"{path} has no column {column!r}; it has {', '.join(rows[0])}")
    return {row["id"]: float(row[column]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the baseline system's result folder")
    parser.add_argument("b", type=Path, help="the system compared with it")
    parser.add_argument("--column", default="mean_si_sdri", help="a score of scores.csv (default mean_si_sdri)")
    args = parser.parse_args()
    a, b = scores(args.a, args.column), scores(args.b, args.column)
    common = sorted(a.keys() & b.keys())
    if len(common) < 2:
        raise UnasdiffError(f"{args.a.name} and {args.b.name} share {len(common)} scored mixture(s): need 2 or more")
    diffs = [b[k] - a[k] for k in common]
    mean, error = mean_and_error(diffs)
    print(f"{len(common)} mixtures scored by both; {args.column}:")
    print("| system | mean |")
    print("| --- | --- |")
    for name, s in ((args.a.name, a), (args.b.name, b)):
        print(f"| {name} | {sum(s[k] for k in common) / len(common):+.2f} |")
    print(f"\nB - A: {mean:+.2f} ± {error:.2f} (s.e.), "
          f"B better on {sum(d > 0 for d in diffs)} of {len(diffs)}")


if __name__ == "__main__":
    run_or_exit(main)
