"""Hydra configs of coact-verl, importable as ``coact_verl.configs`` from an installed package."""
