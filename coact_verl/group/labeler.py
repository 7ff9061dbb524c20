"""One prompt's group, start to finish: consistency -> route -> oracle -> label -> per-response rewards.

:class:`GroupLabeler` is the single implementation behind both verl paths (the group step inside the
rollout workers and the drop-in reward manager). It runs inside an asyncio event loop and never blocks
it: clustering runs in a thread (math-verify in its own process pool), the oracle call is async with a
hard bound on the wait.

Groups that end with no label (dropped by the router, or the oracle had no answer in time) get reward
0 for every response. Under GRPO's group-normalised advantage that is an advantage of exactly 0, so
they add no policy-gradient term; in DPO mode they make no pair.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from coact_verl.config import CoActConfig
from coact_verl.consistency import AnswerClusterer, GroupStats, alabel_clusters, ascore_groups, rewards_for_cluster
from coact_verl.records import (
    ORACLE_NOT_ASKED,
    PAIR_CHOSEN,
    PAIR_REJECTED,
    REASON_POOL_LABEL,
    ROUTE_DROP,
    ROUTE_FEEDBACK,
    ROUTE_ORACLE,
    ROUTE_SELF,
    SOURCE_FEEDBACK,
    SOURCE_NONE,
    SOURCE_ORACLE,
    SOURCE_SELF,
    PromptRow,
    ResponseInfo,
)
from coact_verl.rewards.pairs import select_pair
from coact_verl.router import GroupView, LocalRouter, RouterClient, RouterService
from coact_verl.router.embedding import make_embedder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupRequest:
    """The n responses of one prompt.

    Attributes:
        prompt_id: stable prompt id (``extra_info.prompt_id``); falls back to the rollout uid.
        question: prompt text shown to the oracle and embedded for the k-NN router.
        task: answer format (``gsm8k``, ``math``, ``numeric``).
        step: training step the responses were sampled at.
        responses: decoded responses, shape ``(n,)``.
        given_label: a label the prompt already carries (prompt-pool rows, :attr:`PromptRow.given_label`); the group
            is then scored against it without routing or asking the oracle.
        given_source: ``oracle`` or ``self`` for a given label, else ``none``.
        finished: per response, whether it ended on its own rather than at the rollout's length limit, shape
            ``(n,)`` (see :func:`response_finished`); ``None``: all did. A cut response has an answer only where
            it wrote one explicitly (box, answer marker, ``####``) before the cut.
    """

    prompt_id: str
    question: str
    task: str
    step: int
    responses: tuple[str, ...]
    given_label: str | None = None
    given_source: str = SOURCE_NONE
    finished: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.finished is not None and len(self.finished) != len(self.responses):
            raise ValueError(f"{len(self.responses)} responses but {len(self.finished)} finished flags")

    @classmethod
    def from_row(
        cls,
        row: PromptRow,
        uid: str,
        default_task: str,
        step: int,
        responses: tuple[str, ...],
        finished: tuple[bool, ...] | None = None,
    ) -> GroupRequest:
        """The request for a row's group: the row's prompt id (else the rollout ``uid``), its task (else
        ``default_task``) and the label it carries."""
        label, source = row.given_label
        return cls(
            prompt_id=row.prompt_id or uid,
            question=row.question,
            task=row.task or default_task,
            step=step,
            responses=responses,
            given_label=label,
            given_source=source,
            finished=finished,
        )


def stop_token_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids on which a response ends on its own: a Hugging Face tokenizer's special tokens, else its
    ``eos_token_id`` (tokenizers without either give none, and only the length limit marks a cut)."""
    special = getattr(tokenizer, "all_special_ids", None)
    if special is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        special = [] if eos is None else [eos]
    return frozenset(int(i) for i in special)


def response_finished(token_ids: Sequence[int], max_tokens: int, stop_ids: Collection[int]) -> bool:
    """Whether a sampled response ended on its own: shorter than ``max_tokens`` (the rollout's length limit),
    or ending on one of ``stop_ids`` (end-of-turn and other special tokens)."""
    return len(token_ids) < max_tokens or (len(token_ids) > 0 and int(token_ids[-1]) in stop_ids)


@dataclass(frozen=True)
class GroupOutcome:
    """What CoAct decided for one group; ``rewards`` has shape ``(n,)`` with values in {0, 1}."""

    stats: GroupStats
    route: str
    route_reason: str
    label_source: str
    label_answer: str | None
    label_cluster: int
    oracle_status: str
    rewards: tuple[float, ...]
    pair: tuple[int, int] | None = None

    def pair_role(self, index: int) -> str:
        """``chosen``/``rejected`` for the two responses of the group's DPO pair, else ``""``."""
        if self.pair is None:
            return ""
        return PAIR_CHOSEN if index == self.pair[0] else PAIR_REJECTED if index == self.pair[1] else ""

    def response_info(self, index: int, prompt_id: str) -> ResponseInfo:
        """What the group step decided for response ``index`` (the ``reward_extra_info`` of verl)."""
        answer = self.stats.answers[index]
        return ResponseInfo(
            prompt_id=prompt_id,
            agreement=float(self.stats.agreement),
            entropy=float(self.stats.entropy),
            route=self.route,
            route_reason=self.route_reason,
            label_source=self.label_source,
            label=self.label_answer or "",
            label_cluster=int(self.label_cluster),
            pred=answer or "",
            cluster=int(self.stats.cluster_of[index]),
            oracle_status=self.oracle_status,
            reward=float(self.rewards[index]),
            pair_role=self.pair_role(index),
        )

    def response_infos(self, prompt_id: str) -> list[ResponseInfo]:
        """:meth:`response_info` of every response, shape ``(n,)``."""
        return [self.response_info(i, prompt_id) for i in range(self.stats.n)]


def feedback_infos(n: int, kind: str, weight: float, prompt_id: str = "") -> list[ResponseInfo]:
    """The n responses of a user feedback pair.

    Row 0 replays the chosen response and row 1 the rejected one; further rows take no part. Rewards are 0:
    a pair teaches through the DPO loss only.
    """
    if n < 2:
        raise ValueError(f"a feedback pair needs rollout.n >= 2, got {n}")
    roles = [PAIR_CHOSEN, PAIR_REJECTED] + [""] * (n - 2)
    return [
        ResponseInfo(
            prompt_id=prompt_id,
            route=ROUTE_FEEDBACK,
            route_reason=kind,
            label_source=SOURCE_FEEDBACK,
            pair_role=role,
            pair_weight=float(weight),
        )
        for role in roles
    ]


class GroupLabeler:
    """Stateful per-process labeller: owns the clusterer, the router and the oracle client.

    Args:
        config: plugin settings.
        oracle_url: base URL of the oracle service; ``None`` means no oracle (oracle-routed groups fall back).
        router: the job's router (shared by every labeller of the job); ``None``: one of this labeller's own.
    """

    def __init__(self, config: CoActConfig, oracle_url: str | None = None, router: RouterClient | None = None) -> None:
        self.config = config
        self.clusterer = AnswerClusterer(config.consistency)
        self.router = router or LocalRouter(RouterService(config.router, budget_total=config.oracle.budget_total))
        self.embedder = make_embedder(config.router.embedder, config.router.embedder_model)
        self.oracle_url = oracle_url
        self._oracle: Any = None

    def oracle_client(self) -> Any:
        """The oracle client (made on first use), or ``None`` without an oracle URL."""
        if self._oracle is None and self.oracle_url:
            from coact_verl.oracle.client import OracleClient

            cfg = self.config.oracle
            self._oracle = OracleClient(
                self.oracle_url,
                cfg.resolved_token(),
                request_timeout_s=cfg.request_timeout_s,
                max_wait_s=cfg.max_wait_s,
                retries=cfg.retries,
                run_id=cfg.run_id,
            )
        return self._oracle

    async def label(self, request: GroupRequest) -> GroupOutcome:
        """Cluster, route, query the oracle when routed there, and score every response."""
        if not request.responses:
            raise ValueError(f"group {request.prompt_id} has no responses")
        task = request.task or self.config.consistency.task
        finished = None if request.finished is None else [request.finished]
        stats = (await ascore_groups([list(request.responses)], task, self.clusterer, finished))[0]
        if request.given_label is not None:
            return await self._score_given(request, stats, task)
        embedding = self.embedder.encode([request.question])[0]
        sizes = stats.cluster_sizes
        view = GroupView(
            agreement=stats.agreement,
            embedding=embedding,
            prompt_id=request.prompt_id,
            task=task,
            runner_up=sizes[1] / stats.n if len(sizes) > 1 else 0.0,
        )
        route = await self.router.route(view, request.step)
        decision, reason = route.action.value, route.reason.value
        label_answer, label_cluster, source, oracle_status = None, -1, SOURCE_NONE, ORACLE_NOT_ASKED
        if decision == ROUTE_ORACLE:
            oracle_status, label_answer, label_cluster = await self._ask_oracle(request, stats, task)
            if oracle_status == "labeled":
                source = SOURCE_ORACLE
                # branch yield, calibration, audit; the reference set takes confirmed majorities (cluster 0)
                await self.router.observe(view, route, label_cluster == 0, label_cluster >= 0, task)
            elif stats.agreement >= self.config.router.self_label_threshold and stats.majority_answer is not None:
                decision, reason = ROUTE_SELF, f"oracle_{oracle_status}"
            else:
                decision, reason = ROUTE_DROP, f"oracle_{oracle_status}"
        if decision == ROUTE_SELF and stats.majority_answer is not None:
            label_answer, label_cluster, source = stats.majority_answer, 0, SOURCE_SELF
        elif decision == ROUTE_SELF:
            decision, reason = ROUTE_DROP, "no_answer"
        rewards = rewards_for_cluster(stats, label_cluster) if source != SOURCE_NONE else [0.0] * stats.n
        pair = _pair(stats, label_cluster, request.responses) if source != SOURCE_NONE else None
        return GroupOutcome(
            stats=stats,
            route=decision,
            route_reason=reason,
            label_source=source,
            label_answer=label_answer,
            label_cluster=label_cluster,
            oracle_status=oracle_status,
            rewards=tuple(rewards),
            pair=pair,
        )

    async def _score_given(self, request: GroupRequest, stats: GroupStats, task: str) -> GroupOutcome:
        """Score a group against the label its prompt carries; the router and its budget are not involved."""
        cluster = (await alabel_clusters([stats], [request.given_label], self.clusterer, task))[0]
        rewards = rewards_for_cluster(stats, cluster)
        pair = _pair(stats, cluster, request.responses)
        route = ROUTE_ORACLE if request.given_source == SOURCE_ORACLE else ROUTE_SELF
        return GroupOutcome(
            stats=stats,
            route=route,
            route_reason=REASON_POOL_LABEL,
            label_source=request.given_source,
            label_answer=request.given_label,
            label_cluster=cluster,
            oracle_status=ORACLE_NOT_ASKED,
            rewards=tuple(rewards),
            pair=pair,
        )

    async def _ask_oracle(self, request: GroupRequest, stats: GroupStats, task: str) -> tuple[str, str | None, int]:
        """(status, label answer, label cluster). Candidates are the clusters, largest first."""
        client = self.oracle_client()
        if client is None:
            return "no_oracle", None, -1
        from coact_verl.oracle.client import make_key

        representative: dict[int, str] = {}
        for index, cluster in enumerate(stats.cluster_of):
            representative.setdefault(cluster, request.responses[index])
        candidates = [
            {"answer": answer, "response": representative[c], "votes": stats.cluster_sizes[c]}
            for c, answer in enumerate(stats.cluster_answers)
        ]
        result = await client.query(
            key=make_key(request.prompt_id, request.step, request.responses),
            prompt_id=request.prompt_id,
            prompt=request.question,
            task=task,
            step=request.step,
            candidates=candidates,
        )
        if not result.labeled:
            return result.status, None, -1
        correct = [i for i, verdict in enumerate(result.label.correct) if verdict]
        if correct:
            return "labeled", stats.cluster_answers[correct[0]], correct[0]
        answer = result.label.answer
        cluster = (await alabel_clusters([stats], [answer], self.clusterer, task))[0] if answer else -1
        return "labeled", answer, cluster

    async def aclose(self) -> None:
        if self._oracle is not None:
            await self._oracle.aclose()
        self.clusterer.close()


def _pair(stats: GroupStats, label_cluster: int, responses: tuple[str, ...]) -> tuple[int, int] | None:
    """The group's (chosen, rejected) response indices for DPO, or ``None`` (no label cluster)."""
    if label_cluster < 0:
        return None
    return select_pair(list(stats.cluster_of), label_cluster, [len(r) for r in responses])
