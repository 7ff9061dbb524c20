"""Every metric CoAct logs is under ``coact/`` and documented, and the README's table is the generated one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from coact_verl import metric_keys
from coact_verl.config import RouterConfig
from coact_verl.feedback.queue import FeedbackQueue
from coact_verl.metrics import step_metrics
from coact_verl.pool import GenerationRound, PromptPool
from coact_verl.records import ResponseInfo
from coact_verl.router import Router

README = Path(__file__).resolve().parents[1] / "README.md"


def _emitted() -> dict[str, float]:
    infos = [
        ResponseInfo(prompt_id="a", route="self", label_source="self", label="4", pred="4", reward=1.0, agreement=1.0),
        ResponseInfo(prompt_id="b", route="oracle", label_source="oracle", label="", oracle_status="labeled"),
        ResponseInfo(prompt_id="c", route="drop", oracle_status="unavailable"),
    ]
    gold = {"a": "4", "b": "5", "c": "6"}
    out = step_metrics([i.to_extra_info() for i in infos], ["a", "b", "c"], gold, lambda p: [a == b for a, b in p])
    pool = PromptPool()
    pool.add("What is 2 + 2?", "gsm8k")
    out |= pool.metrics()
    out |= GenerationRound(step=1, task="gsm8k", generated=2, rejected=Counter(duplicate=1), agreements=[0.5]).metrics()
    out |= FeedbackQueue().metrics()
    out |= Router(RouterConfig(audit_share=0.1), budget_total=10).metrics()
    return out


def test_every_emitted_metric_is_under_the_prefix_and_documented():
    emitted = _emitted()
    assert len(emitted) > 40
    undocumented = sorted(k for k in emitted if metric_keys.documented(k) is None)
    assert undocumented == []
    assert all(k.startswith(metric_keys.PREFIX) for k in emitted)


def test_templates_match_one_segment_per_field():
    assert metric_keys.documented("coact/route/self_frac").key == metric_keys.ROUTE_FRAC
    assert metric_keys.documented("coact/router/calibration/gsm8k/0.7500/n").key == metric_keys.ROUTER_CALIBRATION_N
    assert metric_keys.documented("coact/route/self/x_frac") is None
    assert metric_keys.documented("pool/size") is None


def test_readme_metrics_table_is_the_generated_one():
    table = metric_keys.readme_table(README.read_text(encoding="utf-8"))
    assert table is not None, f"README.md lacks the {metric_keys.BEGIN} ... {metric_keys.END} block"
    assert table == metric_keys.metrics_table(), "run: python -m coact_verl.metric_keys README.md"


def test_write_readme_table_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{metric_keys.BEGIN}\n| old |\n{metric_keys.END}\nafter\n", encoding="utf-8")
    assert metric_keys.write_readme_table(readme) is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# t\n\nbefore\n") and text.endswith("\nafter\n") and "| old |" not in text
    assert metric_keys.write_readme_table(readme) is False
