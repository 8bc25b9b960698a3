"""Build the shipped reference set (data/reference/) from the shared data folder.

Usage: python scripts/build_reference.py [--shared ../shared/data] [--out data/reference]

The output is deterministic: the same shared data give the same structures.jsonl.gz bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evaluation.records import CrystalInputError
from evaluation.reference import build_reference_set

REPOSITORY = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=REPOSITORY.parent / "shared" / "data",
        help="shared data folder with structures/ and reference/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPOSITORY / "data" / "reference",
        help="output folder (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        manifest = build_reference_set(args.shared, args.out)
    except CrystalInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for source, count in manifest["counts"].items():
        print(f"{source:<22}{count:>8}")
    print(f"{'total':<22}{manifest['n_structures']:>8}")
    print(
        f"skipped {len(manifest['skipped'])}, duplicates dropped "
        f"{len(manifest['duplicates_dropped'])}; {args.out / manifest['file']}: "
        f"{manifest['size_bytes'] / 1e6:.2f} MB, sha256 {manifest['sha256'][:16]}...; "
        f"{time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
