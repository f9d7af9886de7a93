"""``python -m sv2.settlement_vectors [--check] [PATH]``: write (or compare) the vectors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sv2.settlement_vectors import VECTORS_PATH, generate, render


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("path", nargs="?", type=Path, default=VECTORS_PATH)
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    args = p.parse_args(argv)
    text = render(generate())
    if args.check:
        same = args.path.exists() and args.path.read_text() == text
        print(f"{args.path}: {'up to date' if same else 'DIFFERS from the code'}")
        return 0 if same else 1
    args.path.write_text(text)
    print(f"wrote {args.path} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
