"""``coact-verl eval``: pass@1 and maj@n of a model on GSM8K, MATH-500 or OCW."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coact_verl.evaluation.generate import BACKENDS, BackendUnavailableError, SamplingSettings
from coact_verl.evaluation.problems import EVAL_DATASETS

SRC_HELP = (
    "either the raw source that 'prepare' reads (a .jsonl file, a folder with test.jsonl, or a hub dataset name; "
    "its whole test split is used), or a parquet written by 'prepare' such as test.parquet (gold answers from "
    "reward_model.ground_truth, else from <stem>_gold.parquet beside it)"
)


def add_eval_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``eval`` on an ``argparse`` subparsers object; parsed args carry ``func=run_eval_command``."""
    parser = subparsers.add_parser(
        "eval",
        help="sample n answers per problem and report pass@1 and maj@n",
        description=(
            "Sample n responses per problem with the prompts that 'prepare' writes (tokenizer chat template, "
            "same instruction), cluster equivalent answers as training does, and write eval.json (per problem "
            "+ summary) and eval.md to --out."
        ),
    )
    defaults = SamplingSettings()
    add = parser.add_argument
    add("--model", required=True, help="local model folder or hub name (transformers format)")
    add("--dataset", required=True, choices=EVAL_DATASETS, help="benchmark, which fixes the answer format")
    add("--src", required=True, help=SRC_HELP)
    add("--n", type=int, default=defaults.n, help="samples per problem")
    add("--limit", type=int, default=None, help="evaluate only the first K problems")
    add("--out", default="eval_out", help="output folder for eval.json and eval.md")
    add("--batch-size", type=int, default=defaults.batch_size, help="sequences per generate call (transformers)")
    add("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="response length limit, tokens")
    add("--temperature", type=float, default=defaults.temperature, help="sampling temperature (0: greedy)")
    add("--top-p", type=float, default=defaults.top_p, help="nucleus sampling mass")
    add("--seed", type=int, default=defaults.seed, help="sampling seed")
    add("--backend", choices=BACKENDS, default="auto", help="auto: vLLM when installed and a GPU is visible")
    add("--workers", type=int, default=1, help="math-verify worker processes")
    add("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_eval_command)
    return parser


def run_eval_command(args: argparse.Namespace) -> int:
    """Run ``eval`` from parsed arguments; print the summary as JSON. Returns the exit code (2 on bad input)."""
    from coact_verl.evaluation.run import EvalSettings, run_eval

    try:
        sampling = SamplingSettings(
            n=args.n,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        settings = EvalSettings(
            model=args.model,
            dataset=args.dataset,
            src=args.src,
            out_dir=Path(args.out),
            sampling=sampling,
            limit=args.limit,
            backend=args.backend,
            verify_workers=args.workers,
            progress=not args.no_progress,
        )
        summary = run_eval(settings)
    except (ValueError, OSError, BackendUnavailableError) as exc:
        sys.stderr.write(f"coact-verl eval: error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(f"wrote {Path(args.out) / 'eval.json'} and {Path(args.out) / 'eval.md'}\n")
    return 0
