"""Reading hidden gold answers from parquet or JSON-lines files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def load_gold_file(path: str | Path) -> dict[str, str]:
    """``{prompt_id: answer}`` from a ``.parquet`` or ``.jsonl``/``.json`` file with ``prompt_id`` and ``answer``.

    Answers that are not strings (numbers in parquet) are converted with ``str``; rows without an answer are skipped.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow ships no type information

        table = pq.read_table(path, columns=["prompt_id", "answer"])
        pairs: Iterator[tuple[object, object]] = zip(
            table.column("prompt_id").to_pylist(), table.column("answer").to_pylist(), strict=True
        )
    elif path.suffix in (".jsonl", ".json"):
        rows: list[tuple[object, object]] = []
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    row = json.loads(line)
                    if "prompt_id" not in row or "answer" not in row:
                        raise ValueError(f"{path}:{number}: need 'prompt_id' and 'answer'")
                    rows.append((row["prompt_id"], row["answer"]))
        pairs = iter(rows)
    else:
        raise ValueError(f"gold file must be .parquet or .jsonl, got {path.name}")
    return {str(pid): str(ans) for pid, ans in pairs if pid is not None and ans is not None}
