"""Reading preference pairs and rating rows from the formats our exports (and TRL) use.

A pair is `{"prompt": [messages], "chosen": [one assistant message], "rejected": [...], "margin"?, "cluster_id"?,
"source"?}`. A rating row is `{"prompt": [messages], "response": [one assistant message], "helpfulness", …}`.
Accepted inputs: a `datasets` folder (`save_to_disk`), a folder of `train`/`test` JSONL or Parquet files, or one
JSONL / Parquet file. TRL's standard (string) format is converted to the conversational one.
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import orjson

from curation.errors import InputError


def read_rows(path: str | Path, split: str = "train") -> list[dict]:
    """Rows of `split` from a dataset folder or file; a single file is the train split. [] when the split is absent."""
    path = Path(path)
    if path.is_file():
        return _read_file(path) if split == "train" else []
    if not path.is_dir():
        raise InputError(f"{path} does not exist; pass a folder from `curate export preferences` or a JSONL/Parquet file")
    if (path / "dataset_dict.json").exists():
        from datasets import load_from_disk

        data = load_from_disk(str(path))
        return data[split].to_list() if split in data else []
    for ext in ("jsonl", "parquet"):
        if (path / f"{split}.{ext}").exists():
            return _read_file(path / f"{split}.{ext}")
    if split == "train" and not any((path / f"train.{e}").exists() for e in ("jsonl", "parquet")):
        raise InputError(f"{path} has no dataset_dict.json, train.jsonl or train.parquet; pass an export folder or a file")
    return []


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    with open(path, "rb") as handle:
        for n, line in enumerate(handle, 1):
            if n == 1:
                line = line.removeprefix(codecs.BOM_UTF8)  # editors on Windows start a file with one
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise InputError(f"{path}:{n} is not JSON ({exc}); fix or remove that line") from None
    return rows


def as_messages(value: Any, role: str) -> list[dict]:
    """TRL's standard format (a string) or conversational format (a list of messages) as a list of messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return [{"role": m.get("role", role), "content": m.get("content") or ""} for m in value]
    raise InputError(f"expected a string or a list of messages, got {type(value).__name__}")


def standardize_pair(row: dict) -> dict:
    """A TRL preference row (explicit or implicit prompt, standard or conversational) in our conversational form."""
    if "chosen" not in row or "rejected" not in row:
        raise InputError("a preference row needs `chosen` and `rejected` (TRL format); is this a ratings export?")
    chosen, rejected = as_messages(row["chosen"], "assistant"), as_messages(row["rejected"], "assistant")
    prompt = as_messages(row["prompt"], "user") if row.get("prompt") is not None else None
    if prompt is None:  # implicit prompt: the shared leading messages are the context
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    out = dict(row)
    out.update(prompt=prompt, chosen=chosen[-1:], rejected=rejected[-1:])
    return out


def load_pairs(path: str | Path, split: str = "train") -> list[dict]:
    return [standardize_pair(r) for r in read_rows(path, split)]


def load_ratings(path: str | Path, split: str = "train") -> list[dict]:
    rows = read_rows(path, split)
    if rows and "response" not in rows[0]:
        raise InputError(f"{path} has no `response` column; regression needs a `curate export ratings` folder")
    for row in rows:
        row["prompt"] = as_messages(row.get("prompt") or [], "user")
        row["response"] = as_messages(row["response"], "assistant")[-1:]
    return rows
