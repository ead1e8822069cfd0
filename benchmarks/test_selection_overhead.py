"""What does scoring the test split at every validation point cost? Reads the curves.csv of every run
under a directory (a `avel reproduce` output, a runs folder, one run) and prints the time spent on
the test scores against the rest of each epoch (training + validation), measured in the same runs.

    .venv/bin/python benchmarks/test_selection_overhead.py runs/quick

Also prints, over the runs, how far the best test accuracy over the validation points lies above the
test accuracy of the validation-selected checkpoint (the price of test-split selection).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="folder searched for run directories (curves.csv)")
    args = p.parse_args()
    test_s = rest_s = 0.0
    runs = epochs = 0
    gaps = []
    for curves in sorted(args.root.rglob("curves.csv")):
        with open(curves) as f:
            rows = [r for r in csv.DictReader(f) if r.get("test_seconds")]
        if not rows:
            continue
        runs += 1
        epochs += len(rows)
        t = sum(float(r["test_seconds"]) for r in rows)
        test_s += t
        rest_s += sum(float(r["seconds"]) for r in rows) - t
        results = curves.parent / "results.json"
        if results.is_file():
            sel = json.loads(results.read_text()).get("test_at_validation") or {}
            if sel.get("difference") is not None:
                gaps.append(sel["difference"])
    if not runs:
        raise SystemExit(f"no curves.csv with test_seconds under {args.root}")
    print(f"{runs} runs, {epochs} validation points")
    print(f"test scoring: {test_s:.1f} s; training + validation: {rest_s:.1f} s; "
          f"overhead +{100.0 * test_s / rest_s:.2f}% on top of training + validation")
    if gaps:
        gaps.sort()
        print(f"best-over-epochs minus selected test accuracy: mean {sum(gaps) / len(gaps):.2f} points, "
              f"median {gaps[len(gaps) // 2]:.2f}, max {gaps[-1]:.2f} ({len(gaps)} runs)")


if __name__ == "__main__":
    main()
