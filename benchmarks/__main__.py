"""`python -m benchmarks`: run the matrix and write docs/performance.md, or re-render it from its JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import __doc__ as overview
from benchmarks.measure import log, run_matrix
from benchmarks.report import chart, fmt, render, write_outputs

#: The model to benchmark when --model is not given.
MODEL_ENV = "CASSAVA_BENCH_MODEL"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(overview or "").strip().splitlines()[0],
        epilog="Paths are relative to the current directory: run it from the repository root.",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=os.environ.get(MODEL_ENV) or None,
        help=f"model directory to benchmark (a SavedModel; default: ${MODEL_ENV})",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/performance.md"), help="Markdown to write (JSON next to it)"
    )
    parser.add_argument("--workdir", type=Path, default=Path(".bench"), help="scratch folder (model copy)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run of the tooling")
    parser.add_argument("--render", type=Path, help="only rewrite --out from this JSON")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        args.out.write_text(render(results, chart(results, args.out)))
        return 0
    if args.model is None:
        parser.error(f"no model: pass --model DIR or set {MODEL_ENV}")
    from cassava.model_store import SAVED_MODEL_FILE

    if not (args.model / SAVED_MODEL_FILE).is_file():
        parser.error(f"no {SAVED_MODEL_FILE} in {args.model}; pass --model DIR with a SavedModel in it")
    results = run_matrix(args.model, args.workdir, quick=args.quick)
    write_outputs(results, args.out)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} in {results['elapsed_s'] / 60:.1f} min")
    for t in results["targets"]:
        log(f"  {t['name']}: {fmt(t['value'], 3)} {t['unit']} (target {t['target']:.3g}) met={t['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
