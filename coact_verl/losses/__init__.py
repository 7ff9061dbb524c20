"""Training losses on plain tensors, and where DPO pairs sit in a data-parallel batch."""

from coact_verl.losses.dpo import dpo_nll_loss, sequence_logps
from coact_verl.losses.pairs import dpo_config_problems, pair_layout, pair_rows, pairs_per_mini_batch

__all__ = ["dpo_config_problems", "dpo_nll_loss", "pair_layout", "pair_rows", "pairs_per_mini_batch", "sequence_logps"]
