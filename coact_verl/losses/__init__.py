"""Training losses on plain tensors."""

from coact_verl.losses.dpo import dpo_nll_loss, sequence_logps

__all__ = ["dpo_nll_loss", "sequence_logps"]
