"""The ``oracle serve`` command, starting from an OracleConfig, and the simulated backend end to end."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from oracle_testlib import TRAINER, query_body

from coact_verl.config import CoActConfig
from coact_verl.oracle import OracleClient, start_from_config, stop_local_service
from coact_verl.oracle.cli import add_oracle_subcommand, serve, settings_from_args


def test_subcommand_registration():
    parser = argparse.ArgumentParser(prog="coact-verl")
    add_oracle_subcommand(parser.add_subparsers(dest="command"))
    argv = ["oracle", "serve", "--db", "o.sqlite", "--port", "0", "--backend", "simulated", "--gold", "g.parquet"]
    args = parser.parse_args([*argv, "--budget-total", "5", "--admin-token", "A", "--trainer-token", "T"])
    assert args.func is serve
    settings = settings_from_args(args)
    assert (settings.db_path, settings.backend, settings.gold_path) == ("o.sqlite", "simulated", "g.parquet")
    assert (settings.budget_total, settings.admin_token, settings.trainer_token) == (5, "A", "T")
    assert settings_from_args(parser.parse_args([*argv, "--budget-total", "none"])).budget_total is None


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "coact_verl.oracle", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "--budget-total" in out.stdout and "--trainer-token" in out.stdout


async def test_start_from_oracle_config_with_parquet_gold(tmp_path):
    gold = tmp_path / "gold.parquet"
    pq.write_table(pa.table({"prompt_id": ["p1", "p2", "p3"], "answer": ["1001", "1,002", "1003"]}), gold)
    cfg = CoActConfig.from_mapping(
        {
            "oracle": {
                "db_path": str(tmp_path / "o.sqlite"),
                "gold_path": str(gold),
                "budget_total": 2,
                "token": "trainer-t",
                "serve_args": ["--db-synchronous", "FULL"],
            }
        }  # fmt: skip
    ).oracle
    url, proc = start_from_config(cfg, log_path=str(tmp_path / "o.log"))
    try:
        assert "--db-synchronous" in proc.args and "FULL" in proc.args
        client = OracleClient.from_config(cfg, url)
        first = await client.query(**query_body(1))
        assert first.status == "labeled" and first.label.correct == (True, False)
        second = await client.query(**query_body(2))
        assert second.label.answer == "1002"  # the candidate's spelling, never the hidden gold text ("1,002")
        assert (await client.query(**query_body(3))).status == "over_budget"
        await client.aclose()
    finally:
        assert stop_local_service(proc) in (0, -signal.SIGTERM)  # graceful: no SIGKILL needed


def _labels(service_factory, seed: str, name: str) -> list[tuple]:
    svc = service_factory(
        "--seed", seed, "--sim-flip-rate", "0.25", "--sim-annotators", "13", backend="simulated", name=name
    )
    with svc.client(TRAINER) as c:
        out = [c.post("/v1/queries", json=query_body(i)).json()["label"] for i in range(60)]
    svc.stop()
    return [(tuple(label["correct"]), label["source"]) for label in out]


def test_simulated_backend_is_reproducible(service_factory):
    a, b, c = (_labels(service_factory, seed, name) for seed, name in (("3", "a"), ("3", "b"), ("4", "c")))
    assert a == b and a != c
    truth = (True, False)
    flips = sum(v != t for correct, _ in a for v, t in zip(correct, truth, strict=True))
    assert 0.1 < flips / (2 * len(a)) < 0.4  # p_flip 0.25
    assert {source for _, source in a} == {"simulated"}
