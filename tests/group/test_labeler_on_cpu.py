"""The shared group labeller: self-labels, drops, pairs, and an oracle that cannot be reached."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from coact_verl.adapters.dpo import pair_rows
from coact_verl.config import CoActConfig, OracleConfig, RouterConfig
from coact_verl.group.labeler import GroupLabeler, GroupRequest
from coact_verl.records import INFO_KEYS, PromptRow, ResponseInfo


def _label(config: CoActConfig, responses: list[str], url: str | None = None, given: tuple[str, str] | None = None):
    labeler = GroupLabeler(config, oracle_url=url)
    label, source = given or (None, "none")

    async def run():
        try:
            request = GroupRequest("pid", "What is 2+2?", "gsm8k", 1, tuple(responses), label, source)
            return await labeler.label(request)
        finally:
            await labeler.aclose()

    return asyncio.run(run())


def test_majority_self_label_rewards_and_pair():
    config = CoActConfig(router=RouterConfig(policy="self_only"))
    outcome = _label(config, ["#### 4", "so 4", "#### 5", "it is #### 4 indeed", ""])
    assert outcome.route == "self" and outcome.label_source == "self" and outcome.label_answer == "4"
    assert outcome.rewards == (1.0, 1.0, 0.0, 1.0, 0.0)
    chosen, rejected = outcome.pair
    assert outcome.rewards[chosen] == 1.0 and outcome.rewards[rejected] == 0.0
    assert outcome.response_info(chosen, "pid").to_extra_info()["coact_pair_role"] == "chosen"
    assert outcome.response_info(rejected, "pid").pair_role == "rejected"
    assert {info.pair_role for info in outcome.response_infos("pid")} == {"chosen", "rejected", ""}
    # every response of a batch carries the same keys, the fallback of a group that never gathered included
    assert (
        set(outcome.response_info(0, "pid").to_extra_info())
        == set(INFO_KEYS)
        == set(ResponseInfo.incomplete().to_extra_info())
    )
    info = outcome.response_info(chosen, "pid")
    assert ResponseInfo.from_extra_info(info.to_extra_info()) == info and info.reward == 1.0


def test_low_agreement_is_dropped_with_zero_rewards_and_no_pair():
    config = CoActConfig(router=RouterConfig(policy="self_only"))
    outcome = _label(config, ["#### 1", "#### 2", "#### 3", "#### 4"])
    assert outcome.route == "drop" and outcome.label_source == "none"
    assert outcome.rewards == (0.0,) * 4 and outcome.pair is None


def test_unreachable_oracle_falls_back_within_the_bound():
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = CoActConfig(
        router=RouterConfig(policy="gold_all"),
        oracle=OracleConfig(request_timeout_s=0.2, max_wait_s=1.0, retries=1),
    )
    start = time.monotonic()
    confident = _label(config, ["#### 4", "#### 4", "#### 4", "#### 5"], url=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    assert confident.oracle_status == "unavailable"
    assert confident.route == "self" and confident.rewards == (1.0, 1.0, 1.0, 0.0)
    unsure = _label(config, ["#### 1", "#### 2", "#### 3", "#### 4"], url=f"http://127.0.0.1:{port}")
    assert unsure.route == "drop" and unsure.route_reason == "oracle_unavailable"


def test_empty_group_is_an_error():
    with pytest.raises(ValueError, match="no responses"):
        _label(CoActConfig(), [])


def test_dpo_pairs_found_per_uid_within_a_micro_batch():
    uids = ["a", "a", "a", "b", "b", "c", "c"]
    roles = ["", "rejected", "chosen", "chosen", "", "chosen", "rejected"]
    assert pair_rows(uids, roles) == ([2, 5], [1, 6])  # b has no rejected row here: no pair


def test_a_given_oracle_label_overrides_the_majority_without_routing():
    # the router would ask the oracle for every group (no URL here: it would fall back); a late human label
    # carried by a pool row is used as is, even against a unanimous-but-one majority
    config = CoActConfig(router=RouterConfig(policy="gold_all"))
    outcome = _label(config, ["#### 5", "#### 5", "#### 5", "four, so #### 4"], given=("4.0", "oracle"))
    assert (outcome.route, outcome.route_reason, outcome.oracle_status) == ("oracle", "pool_label", "not_asked")
    assert outcome.label_source == "oracle" and outcome.label_answer == "4.0"
    assert outcome.rewards == (0.0, 0.0, 0.0, 1.0)
    assert outcome.pair == (3, 0)


def test_a_given_label_matching_no_answer_gives_zero_rewards_and_no_pair():
    outcome = _label(CoActConfig(router=RouterConfig(policy="self_only")), ["#### 1", "#### 2"], given=("7", "self"))
    assert outcome.route == "self" and outcome.label_source == "self" and outcome.label_cluster == -1
    assert outcome.rewards == (0.0, 0.0) and outcome.pair is None


def test_given_label_and_question_come_from_the_row():
    def given(extra: dict) -> tuple[str | None, str]:
        return PromptRow.from_row({"extra_info": extra}).given_label

    assert given({"coact_label": "12", "coact_label_source": "oracle"}) == ("12", "oracle")
    assert given({"coact_label": "12", "coact_label_source": "none"}) == (None, "none")
    assert given({"coact_label": "", "coact_label_source": "self"}) == (None, "none")
    assert given({}) == (None, "none")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q1"}]
    assert PromptRow.from_row({"extra_info": {}, "raw_prompt": messages}).question == "Q1"
    assert PromptRow.from_row({"extra_info": {"question": "raw question"}, "raw_prompt": messages}).question == (
        "raw question"
    )
    assert PromptRow.from_row({"extra_info": {}, "raw_prompt": None}).question == ""
    row = PromptRow.from_row(
        {"extra_info": {"coact_label": "3", "coact_label_source": "oracle"}, "raw_prompt": messages}
    )
    request = GroupRequest.from_row(row, "uid-7", "math", 4, ("#### 3",))
    assert (request.prompt_id, request.task, request.given_label, request.given_source) == (
        "uid-7",
        "math",
        "3",
        "oracle",
    )


def test_responses_cut_at_the_length_limit_do_not_self_label_their_last_number():
    config = CoActConfig(router=RouterConfig(policy="self_only"))
    cut = "4 apples and 4 more is 8, and then"
    responses = ("#### 5", cut, cut, cut, "#### 5")

    async def run(finished):
        labeler = GroupLabeler(config)
        try:
            return await labeler.label(GroupRequest("pid", "q", "gsm8k", 1, responses, finished=finished))
        finally:
            await labeler.aclose()

    assert asyncio.run(run(None)).label_answer == "8"  # read as finished, the cut reasoning outvotes the answer
    outcome = asyncio.run(run((True, False, False, False, True)))
    assert outcome.stats.answers == ("5", None, None, None, "5")
    assert outcome.rewards == (0.0,) * 5 and outcome.route == "drop"  # 2 of 5 agree: below τ_self
    with pytest.raises(ValueError, match="finished flags"):
        GroupRequest("pid", "q", "gsm8k", 1, responses, finished=(True,))
