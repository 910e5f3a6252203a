"""Writing an export: folder safety (never overwrite what is not an export), the data files in each format,
`manifest.json`, the dataset card, and the `preference_exports` row.

An export writes only into an empty folder or an earlier export (marked by `.curate-export`, written first), unless
`overwrite`; never into the Curate home itself.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson

from annotations.template import ATTRIBUTES
from curation.console import quiet
from curation.errors import CurateError, InputError
from curation.store import Store, dumps, utcnow
from loops.tables import preference_exports

FORMATS = ("hf", "parquet", "jsonl")
MARKER = ".curate-export"  # written before anything else, so an interrupted export is still known as ours
# what an export writes, in any format: cleared before the next export into the same folder, so no stale split stays
OUTPUTS = (MARKER, "manifest.json", "README.md", "dataset_dict.json", "train", "test",
           *(f"{split}.{ext}" for split in ("train", "test") for ext in ("jsonl", "parquet")))


def _features(kind: str) -> Any:
    """Fixed column types, so that an empty split or an attribute nobody rated still has the same schema."""
    from datasets import Features, Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    provenance = {"context_id": Value("string"), "cluster_id": Value("int64"), "annotators": [Value("string")],
                  "disagreement": Value("bool"), "dataset": Value("string"), "run_id": Value("string"),
                  "simulated": Value("bool")}
    if kind == "preferences":
        return Features({"prompt": messages, "chosen": messages, "rejected": messages, "margin": Value("float64"),
                         "rule": Value("string"), "conversation_id_chosen": Value("string"),
                         "conversation_id_rejected": Value("string"), "source": Value("string"), **provenance})
    return Features({"prompt": messages, "response": messages, **{a: Value("float64") for a in ATTRIBUTES},
                     "conversation_id": Value("string"), "n_annotators": Value("int64"), **provenance})


def _write(rows: dict[str, list[dict]], out: Path, fmt: str, kind: str) -> None:
    from datasets import Dataset, DatasetDict

    if fmt == "jsonl":
        for name, part in rows.items():
            (out / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in part))
        return
    features = _features(kind)
    # an empty split is left out of an hf folder: datasets cannot load an empty saved split back (`--test-size 0`);
    # readers take an absent split as empty
    parts = DatasetDict({name: Dataset.from_dict({k: [r[k] for r in part] for k in features}, features=features)
                         for name, part in rows.items() if part or name == "train" or fmt != "hf"})
    with quiet():  # datasets draws its own "Saving the dataset" bars, on a terminal or not
        if fmt == "hf":
            parts.save_to_disk(str(out))
        else:
            for name, part in parts.items():
                part.to_parquet(str(out / f"{name}.parquet"))


def check_out(store: Store, out: Path, overwrite: bool = False) -> None:
    """Refuse an `out` where an export would overwrite what is not ours: the Curate home itself (always), a file,
    or a folder that holds anything but an earlier export (unless `overwrite`)."""
    if out.resolve() == store.home.resolve():
        raise CurateError(f"--out {out} is the Curate home; write the export to a folder of its own, "
                          f"e.g. {store.home / 'exports' / 'NAME'}")
    if out.exists() and not out.is_dir():
        raise CurateError(f"--out {out} is a file; pick a folder (an empty or new one)")
    if overwrite or not out.exists() or _is_export(out) or not any(out.iterdir()):
        return
    raise CurateError(f"--out {out} is not empty and holds no earlier Curate export; pick an empty or new folder, "
                      "or pass --overwrite to write the export files into it anyway")


def _is_export(out: Path) -> bool:
    """An earlier export: the marker, or the manifest that exports made before there was a marker."""
    if (out / MARKER).is_file():
        return True
    try:
        manifest = orjson.loads((out / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") in ("preferences", "ratings") and "version" in manifest


def _clear(out: Path) -> None:
    """Remove what an earlier export wrote (any format); nothing else in the folder is touched."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_export(store: Store, out: Path, fmt: str, kind: str, train: list[dict], test: list[dict], manifest: dict,
                 run_id: str, push_to_hub: str | None) -> dict:
    """Write `train`/`test`, the manifest (with its content version) and the card into `out`, push them to the hub
    when asked, and record the export; returns the command's summary."""
    manifest["version"] = hashlib.sha256(b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
                                                  for r in train + test)).hexdigest()[:16]
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    (out / MARKER).write_bytes(orjson.dumps({"kind": kind, "run_id": run_id, "created_at": manifest["created_at"]}))
    _write({"train": train, "test": test}, out, fmt, kind)
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    (out / "README.md").write_text(_card(kind, manifest))
    if push_to_hub:
        from datasets import DatasetDict, load_from_disk

        try:
            data = load_from_disk(str(out)) if fmt == "hf" else DatasetDict.from_json(
                {s: str(out / f"{s}.jsonl") for s in ("train", "test")}) if fmt == "jsonl" else DatasetDict.from_parquet(
                {s: str(out / f"{s}.parquet") for s in ("train", "test")})
            data.push_to_hub(push_to_hub)
        except Exception as exc:  # noqa: BLE001 (network and auth errors come in many types)
            raise CurateError(f"export written to {out}, but pushing to {push_to_hub} failed: {exc}; "
                              "check HF_TOKEN and network access (HF_HUB_OFFLINE must be unset)") from None
    summary = {"pairs" if kind == "preferences" else "rows": len(train) + len(test), "train": len(train),
               "test": len(test), "out": str(out), "version": manifest["version"],
               "simulated": manifest["counts"]["simulated"]}
    with store.begin() as conn:
        conn.execute(preference_exports.insert().values(
            out=str(out), pairs=len(train) + len(test), train=len(train), test=len(test), manifest=dumps(manifest),
            created_at=utcnow(), run_id=run_id))
    return summary


def _card(kind: str, m: dict) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in m["counts"].items() if not isinstance(v, dict))
    lines = [
        "---", "license: other", f"tags: [curate, {'preference' if kind == 'preferences' else 'helpsteer2-ratings'}]",
        "configs:", "- config_name: default", "  data_files:",
        *(f"  - split: {s}\n    path: {s}.{'jsonl' if m['format'] == 'jsonl' else 'parquet'}" for s in ("train", "test")
          if m["format"] != "hf"),
        "---", "",
        f"# Curate {kind} export `{m['version']}`", "",
        f"Created {m['created_at']} by Curate run `{m['run_id']}`. Counts: {counts}.", "",
    ]
    if kind == "preferences":
        lines += [
            "Columns follow TRL's conversational preference format: `prompt` (messages), `chosen` and `rejected` (one "
            "assistant message each), `margin`; provenance: `rule`, `context_id`, `conversation_id_chosen`, "
            "`conversation_id_rejected`, `cluster_id`, `annotators`, `disagreement`, `dataset`, `run_id`, `source`, "
            "`simulated` (true when a simulated annotator's rating made the pair: not a person's judgement).", "",
            f"Pairs by rule: {m['counts']['by_rule']}. Rules and thresholds: `{orjson.dumps(m['rules']).decode()}`.", "",
        ]
        if "judge" in m["counts"]:
            lines += [f"{m['counts']['judge']} pairs come from the LLM judge, not from people (RLAIF): their "
                      "`source` = `judge` and `rule` = `judge`, and `annotators` names the judge (model@rubric).", ""]
    else:
        lines += ["Columns: `prompt` (messages), `response` (one assistant message), the HelpSteer2 attributes "
                  f"{', '.join(ATTRIBUTES)} (consensus means, 0–4, null when not rated), and provenance.", ""]
    lines += [
        f"Agreement: `{orjson.dumps(m['agreement']).decode()}`.",
        f"Split grouped by context (no prompt on both sides), stratified by cluster, seed {m['rules'].get('seed')}.", "",
        f"Source runs: {', '.join(m['source_runs']) or 'none'}. Mixed-in data: {m['mixed'] or 'none'}.", "",
        f"Licence: {m['licence']}", "",
    ]
    return "\n".join(lines)
