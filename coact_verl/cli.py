"""``coact-verl`` command line: prepare data, run the CPU demo, score saved rollouts, serve the oracle,
evaluate a model and report on a training run."""

from __future__ import annotations

import argparse
import sys


def _prepare(args: argparse.Namespace) -> int:
    from coact_verl.data.prepare import prepare

    for name, path in prepare(
        args.dataset, args.src, args.out, max_train=args.max_train, eval_src=args.eval_src
    ).items():
        print(f"{name}: {path}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _demo(args: argparse.Namespace) -> int:
    from coact_verl.demo import run_demo

    run = run_demo(args.workdir, steps=args.steps, extra_overrides=args.overrides)
    return 0 if run.returncode == 0 and run.steps else 1


def _config_dir(_: argparse.Namespace) -> int:
    from coact_verl.launch import config_dir

    print(config_dir())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coact-verl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="write a dataset as verl parquet (gold answers kept aside)")
    prep.add_argument("--dataset", required=True, choices=["gsm8k", "math", "math500", "ocw", "arithmetic"])
    prep.add_argument("--src", default=None, help="local jsonl file/folder, or a hub dataset name")
    prep.add_argument("--eval-src", default=None, help="math: the MATH-500 evaluation set (default: the hub's)")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--max-train", type=int, default=None, help="keep at most this many training prompts")
    prep.set_defaults(func=_prepare)

    demo = sub.add_parser("demo", help="CoAct's story on CPU: a small model with planted errors, a few GRPO steps")
    demo.add_argument("--workdir", default="demo_run")
    demo.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: the demo's own)")
    demo.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. coact.router.policy=random")
    demo.set_defaults(func=_demo)

    cfg = sub.add_parser("config-dir", help="print the folder of the shipped Hydra configs")
    cfg.set_defaults(func=_config_dir)

    from coact_verl.consistency.offline import add_score_subcommand
    from coact_verl.evaluation.cli import add_eval_subcommand
    from coact_verl.oracle.cli import add_oracle_subcommand
    from coact_verl.report.cli import add_report_subcommand
    from coact_verl.router.cli import add_route_subcommand

    add_score_subcommand(sub)
    add_oracle_subcommand(sub)
    add_eval_subcommand(sub)
    add_report_subcommand(sub)
    add_route_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
