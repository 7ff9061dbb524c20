"""Bands, default routes and per-step budget arithmetic."""

import math

import numpy as np
import pytest

from coact_verl.router.bands import (
    Action,
    Band,
    GroupView,
    Reason,
    band_of,
    budget_for_step,
    default_route,
    oracle_route,
    split_budget,
)


@pytest.mark.parametrize(
    ("agreement", "unanimous", "band"),
    [
        (0.49, None, Band.LOW),
        (0.5, None, Band.SELF),  # τ_self = 0.5 is inclusive (CoAct: c >= 4 of 8)
        (0.875, None, Band.SELF),
        (1.0, None, Band.UNANIMOUS),  # inferred from agreement 1
        (0.75, True, Band.UNANIMOUS),  # an explicit flag wins (e.g. unanswered responses excluded upstream)
        (1.0, False, Band.SELF),
    ],
)
def test_band_of(agreement, unanimous, band):
    assert band_of(GroupView(agreement, unanimous), 0.5) is band


def test_default_route_by_band_and_unanimous_switch():
    low, mid, top = GroupView(0.25), GroupView(0.625), GroupView(1.0)
    assert default_route(low, 0.5, True).action is Action.DROP
    assert default_route(low, 0.5, True).reason is Reason.BELOW_THRESHOLD
    assert default_route(mid, 0.5, True).action is Action.SELF
    assert default_route(top, 0.5, True).action is Action.SELF
    assert default_route(top, 0.5, False).action is Action.DROP
    assert default_route(top, 0.5, False).reason is Reason.UNANIMOUS
    assert default_route(mid, 0.7, True).action is Action.DROP


@pytest.mark.parametrize("bad", [-0.1, 1.01, math.nan])
def test_group_view_rejects_bad_agreement(bad):
    with pytest.raises(ValueError):
        GroupView(bad)


def test_group_view_rejects_matrix_embedding():
    with pytest.raises(ValueError):
        GroupView(0.5, embedding=np.zeros((2, 3)))


def test_oracle_route_refuses_non_oracle_reason():
    assert oracle_route(Reason.KNN).is_oracle
    with pytest.raises(ValueError):
        oracle_route(Reason.MAJORITY)


def test_budget_carry_makes_long_run_share_exact():
    """8 groups at share 0.2: exact spends 1.6, 2.2 (=1.6+0.6), 1.8, 2.4, 2.0 -> floors 1, 2, 1, 2, 2 (sum 8)."""
    carry, budgets = 0.0, []
    for _ in range(5):
        budget, carry = budget_for_step(8, 0.2, carry)
        budgets.append(budget)
    assert budgets == [1, 2, 1, 2, 2]
    assert sum(budgets) == 8
    assert budget_for_step(4, 1.0) == (4, 0.0)
    assert budget_for_step(0, 0.5) == (0, 0.0)


def test_split_budget():
    assert split_budget(300, 0.5) == (150, 150)  # CoAct: 150 uncertain + 150 k-NN
    assert split_budget(5, 0.5) == (3, 2)
    assert split_budget(1, 0.5) == (1, 0)
    assert split_budget(4, 0.0) == (4, 0)
    assert split_budget(4, 1.0) == (0, 4)
