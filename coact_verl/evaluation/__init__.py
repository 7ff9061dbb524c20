"""Model evaluation with CoAct's answer clustering: pass@1 and maj@n over n samples per problem.

Typical use::

    from coact_verl.evaluation import EvalSettings, SamplingSettings, run_eval

    summary = run_eval(EvalSettings("Qwen/Qwen2.5-0.5B-Instruct", "gsm8k", "data/gsm8k", Path("eval_out"),
                                    SamplingSettings(n=8)))
    summary["pass@1"], summary["maj@n"]

The ``eval`` subcommand (:mod:`coact_verl.evaluation.cli`) wraps :func:`run_eval`.
"""

from coact_verl.evaluation.generate import SamplingSettings, generate_samples
from coact_verl.evaluation.metrics import ProblemScore, pass_at_k, score_samples, summarize
from coact_verl.evaluation.problems import EvalProblem, load_problems
from coact_verl.evaluation.run import EvalSettings, run_eval

__all__ = [
    "EvalProblem",
    "EvalSettings",
    "ProblemScore",
    "SamplingSettings",
    "generate_samples",
    "load_problems",
    "pass_at_k",
    "run_eval",
    "score_samples",
    "summarize",
]
