"""Writing a generated sample (fcft.data.make_sample, fcft.data.make_chat_sample): its files and command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_parts(parts: dict, out_dir: Path) -> None:
    """Each part's rows as out_dir/<part>.jsonl, written whole or not at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        path = out_dir / f"{part}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        tmp.replace(path)
        print(f"wrote {len(rows):4d} rows to {path}")


def main(doc: str, write_fn, default_out: Path) -> None:
    """The command line of a sample generator: --out, --seed."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_fn(args.out, args.seed)
