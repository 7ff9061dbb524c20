"""Rewards and preference pairs built from labelled groups."""

from coact_verl.rewards.pairs import NO_ANSWER, PAIR_SOURCES, Pair, edit_pair, make_pair, select_pair, vote_pair

__all__ = ["NO_ANSWER", "PAIR_SOURCES", "Pair", "edit_pair", "make_pair", "select_pair", "vote_pair"]
