"""Merge `lopt eval` outputs of one suite, steps and seeds into one evaluation.

    python scripts/merge_evals.py runs/eval_a/eval.json runs/eval_b/eval.json --out runs/eval

Evaluating several learned optimizers side by side (one `lopt eval` per core or
machine) and merging gives the table and plots one evaluation of them all would
(``meta_train.evaluation.held_out.merge``: the tuned baselines must agree).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from meta_train.evaluation import held_out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", nargs="+", type=pathlib.Path, help="eval.json files")
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    try:
        parts = [json.loads(p.read_text()) for p in args.evals]
        merged = held_out.merge(parts)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    held_out.write_outputs(merged, args.out)
    print(held_out.table(merged))
    print(f"wrote {args.out / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
