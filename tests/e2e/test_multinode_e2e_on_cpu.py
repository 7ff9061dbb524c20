"""CoAct across a 2-node Ray cluster on one machine (``ray.cluster_utils.Cluster``), as on a real cluster:
the oracle service is started as README.md's "Multi-node Ray clusters" section shows (its exported trainer
token and its ``oracle serve`` line), the token is in the environment of the Ray nodes (as with ``ray start``),
the job joins the running cluster (``RAY_ADDRESS``), spreads its FSDP workers and rollout workers over both
nodes, and every worker reaches the oracle service by URL.
"""

from __future__ import annotations

import os
import re
import socket

import pytest

from coact_verl.launch import CPU_ENV
from coact_verl.oracle.local import stop_local_service
from tests.e2e.helpers import base_overrides, run_ok
from tests.e2e.readme_commands import bash_commands, command, export_value, replace_option, section, serve, words

pytestmark = pytest.mark.e2e
NODE = {"num_cpus": 16, "num_gpus": 1, "object_store_memory": 300 * 2**20}  # logical slots, as the CPU config


def test_two_node_cluster_runs_coact_with_the_oracle_by_url(tiny_assets, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    for name, value in CPU_ENV.items():  # the node processes inherit these
        monkeypatch.setenv(name, value)
    text = section("Multi-node Ray clusters")
    (export,) = [c for c in bash_commands(text) if c.startswith("export ")]
    token_env, token = export_value(export)
    monkeypatch.setenv(token_env, token)  # set before the nodes start, as before `ray start`
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = words(command(text, "coact-verl oracle serve"))
    argv = replace_option(argv, "--db", str(tmp_path / "oracle.sqlite"))
    argv = replace_option(replace_option(argv, "--port", str(port)), "--gold", str(tiny_assets["train_gold"]))
    oracle = serve(argv, dict(os.environ), tmp_path / "o.log", port)
    url = command(text, "coact.oracle.url=").split("=", 1)[1].replace("ORACLE_HOST", "127.0.0.1")
    url = url.replace(":8765", f":{port}")
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        overrides = base_overrides(tiny_assets, 2) + [
            "trainer.nnodes=2",
            "trainer.n_gpus_per_node=1",
            "actor_rollout_ref.rollout.agent.num_workers=2",
            # the cluster exists: the job joins it instead of starting Ray with its own resources
            "ray_kwargs.ray_init.num_cpus=null",
            "ray_kwargs.ray_init.num_gpus=null",
            f"coact.oracle.url={url}",
            "coact.router.policy=gold_all",  # every group asks the oracle
        ]
        run = run_ok(
            "coact_grpo_cpu", overrides, tmp_path / "multinode.log", extra_env={"RAY_ADDRESS": cluster.address}
        )
    finally:
        cluster.shutdown()
        stop_local_service(oracle)
    assert sorted(run.steps) == [1, 2]
    for step in run.steps.values():  # every group, whichever node's worker ran it, got the oracle's label
        assert step["coact/oracle/status_labeled"] == step["coact/groups"] == 8
        assert step["coact/route/oracle_frac"] == 1.0
    assert run.steps[2]["coact/oracle/budget_spent"] == 16
    # one rollout worker per node (verl pins agent-loop workers to nodes round-robin), both using the URL
    workers = re.findall(r"CoAct rollout worker on node (\w+), oracle (\S+)", run.log_path.read_text())
    assert len({node for node, _ in workers}) == 2 and {u for _, u in workers} == {url}, workers
    # two FSDP ranks (worker processes); each needs the one logical GPU a node has, so one runs on each node
    ranks = set(re.findall(r"\(WorkerDict pid=(\d+)", run.log_path.read_text()))
    assert len(ranks) == 2, ranks
    assert any(g > 0 for g in run.metric("actor/grad_norm"))
