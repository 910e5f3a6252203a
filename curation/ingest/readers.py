"""Read sources into raw items, one per record, without holding a file in memory.

Each item keeps where it came from (file, line or row number) and its raw bytes, so a rejected record can be
quarantined exactly as it was.
"""
from __future__ import annotations

import codecs
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from curation.errors import InputError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
FORMATS = ("auto", "openai", "sharegpt", "oasst", "otel", "parquet", "hf")
OnDamage = Callable[[int, str], None]  # (number of the first line lost, reason)


@dataclass(slots=True)
class Item:
    source: str
    line: int
    raw: bytes
    obj: Any = None
    error: str | None = None


@dataclass
class Source:
    path: str
    kind: str  # jsonl | parquet | hf
    size: int = 0


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def expand(paths: list[str], fmt: str = "auto") -> list[Source]:
    """Resolve files, directories and (with `--format hf`) hub ids into sources, or fail with what to do."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    sources: list[Source] = []
    for given in paths:
        path = Path(given)
        if fmt == "hf" and not path.exists():
            sources.append(Source(given, "hf"))  # a hub id, fetched only because the user asked for hf
            continue
        if not path.exists():
            raise InputError(f"{given}: no such file or directory; check the path")
        if path.is_dir():
            if _is_hf_dataset_dir(path):
                sources.append(Source(str(path), "hf"))
                continue
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            unknown = [p.name for p in files if _kind(p) is None]
            if unknown:
                raise InputError(
                    f"{given}: directory mixes files Curate cannot read ({', '.join(unknown[:5])}); "
                    "keep only .jsonl[.gz] and .parquet files there, or pass the files you want"
                )
            if not files:
                raise InputError(f"{given}: directory has no .jsonl or .parquet files")
            sources.extend(Source(str(p), _kind(p) or "jsonl", p.stat().st_size) for p in files)
            continue
        kind = "hf" if fmt == "hf" else _kind(path)
        if kind is None:
            kind = "parquet" if fmt == "parquet" else "jsonl" if fmt in ("openai", "sharegpt", "oasst", "otel") else None
        if kind is None:
            raise InputError(
                f"{given}: unknown file type; use .jsonl, .jsonl.gz or .parquet, or name the format with --format"
            )
        sources.append(Source(str(path), kind, path.stat().st_size))
    return sources


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def read(source: Source, on_bytes: Callable[[int], None] | None = None, on_damage: OnDamage | None = None) -> Iterator[Item]:
    if source.kind == "jsonl":
        return read_jsonl(source.path, on_bytes, on_damage)
    if source.kind == "parquet":
        return read_parquet(source.path)
    return read_hf(source.path)


def read_jsonl(path: str, on_bytes: Callable[[int], None] | None = None, on_damage: OnDamage | None = None) -> Iterator[Item]:
    """JSON Lines, plain or gzip (detected by its magic bytes, whatever the name)."""
    return (parse_line(path, number, raw) for number, raw in jsonl_lines(path, on_bytes, on_damage))


def parse_line(path: str, number: int, raw: bytes) -> Item:
    try:
        return Item(path, number, raw, orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        return Item(path, number, raw, None, _json_reason(raw, exc))


def jsonl_lines(path: str, on_bytes: Callable[[int], None] | None = None,
                on_damage: OnDamage | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, stripped bytes) for each non-blank line; `on_bytes` hears of progress about every MiB.

    A UTF-8 byte order mark at the start is skipped (editors on Windows write one). Gzip is recognised by its
    header (magic bytes, deflate, no reserved flags), whatever the name; a file not named .gz whose "gzip" stream
    breaks before its first line is plain text after all (a first line that starts with those bytes), and is read
    as such. When a compressed stream breaks off (a truncated or corrupt .gz), the complete lines before the damage
    have been yielded; then `on_damage(line, reason)` is told the number of the first line lost and why, or without
    it InputError is raised.
    """
    if _looks_gzip(path):
        number, plain = 0, False
        try:
            for number, raw in _lines(path, True, None):
                yield number, raw
        except (OSError, EOFError, zlib.error) as exc:  # what was read stays; say where it broke
            if not number and not path.endswith(".gz"):
                plain = True
                yield from _lines(path, False, on_bytes)  # plain text after all
                return
            reason = (f"file truncated after line {number}: {exc}; the lines before it were read, the rest of "
                      "the file is lost: recompress or re-export it and ingest it again")
            if on_damage is None:
                raise InputError(f"{path}: {reason}") from None
            on_damage(number + 1, reason)
        finally:
            if on_bytes is not None and not plain:
                on_bytes(os.path.getsize(path))
        return
    yield from _lines(path, False, on_bytes)


def _looks_gzip(path: str) -> bool:
    """RFC 1952's header: ID1 ID2 = 1f 8b, CM = 8 (deflate), the reserved FLG bits clear."""
    with open(path, "rb") as probe:
        head = probe.read(4)
    return len(head) == 4 and head[:3] == b"\x1f\x8b\x08" and not head[3] & 0xE0


def _lines(path: str, gz: bool, on_bytes: Callable[[int], None] | None) -> Iterator[tuple[int, bytes]]:
    """The lines of a plain or gzip file; `on_bytes` hears of the bytes read (of a gzip file: the caller does it, in
    the file's compressed bytes)."""
    handle = gzip.open(path, "rb") if gz else open(path, "rb", buffering=1 << 20)
    unreported = 0
    try:
        if handle.peek(3)[:3] == codecs.BOM_UTF8:
            handle.read(3)
        for number, raw in enumerate(handle, 1):
            unreported += len(raw)
            if unreported >= 1 << 20:
                if on_bytes is not None:
                    on_bytes(unreported)
                unreported = 0
            raw = raw.strip()
            if raw:
                yield number, raw
    finally:
        handle.close()
        if on_bytes is not None:
            on_bytes(unreported)


def _json_reason(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start}; re-encode the file as UTF-8"
    return f"malformed JSON: {str(exc).splitlines()[0][:120]}"


def _rows_to_items(path: str, rows: Iterator[dict]) -> Iterator[Item]:
    for number, row in enumerate(rows, 1):
        yield Item(path, number, orjson.dumps(row, default=str), _plain(row))


def _plain(value: Any) -> Any:
    """Arrow/datasets give numpy scalars and arrays in places; the validators expect plain JSON values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def read_parquet(path: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None

    def rows() -> Iterator[dict]:
        for batch in parquet.iter_batches(batch_size=2_000):
            yield from batch.to_pylist()

    return _rows_to_items(path, rows())


def read_hf(path_or_id: str) -> Iterator[Item]:
    import datasets

    try:
        if Path(path_or_id).exists():
            data = datasets.load_from_disk(path_or_id)
        else:
            data = datasets.load_dataset(path_or_id, split="train")
    except Exception as exc:  # datasets raises many types; the message names the fix
        raise InputError(
            f"{path_or_id}: cannot load as a Hugging Face dataset ({str(exc).splitlines()[0][:120]}); "
            "pass a folder written by save_to_disk, or a hub id while online"
        ) from None
    if isinstance(data, datasets.DatasetDict):
        split = "train" if "train" in data else next(iter(data))
        data = data[split]
    return _rows_to_items(path_or_id, iter(data))
