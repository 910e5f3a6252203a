"""The HelpSteer2 rating task: `settings.json` (rg.Settings in the SDK's serialized form) plus `guidelines.md`.

The JSON is the declarative source a team can edit; code only fills in what depends on the run (the embedding's
dimensions, `min_submitted`). `differences` compares two settings so that push can refuse a mismatched dataset.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
VECTOR = "conversation_embedding"  # the vector field's name: "Find similar" in the UI searches it
PREFERENCE = "preference"  # label question, values "-3".."3" (HelpSteer2-Preference; negative = A better)


@lru_cache(maxsize=1)
def _base() -> dict:
    data = json.loads((HERE / "settings.json").read_text(encoding="utf-8"))
    data.pop("_comment", None)
    data["guidelines"] = (HERE / "guidelines.md").read_text(encoding="utf-8")
    return data


def template(min_submitted: int = 1, dimensions: int | None = 384) -> dict:
    """The task settings as a plain dict (the SDK's `Settings.serialize()` shape).

    `dimensions=None` leaves out the vector field (no embeddings yet); `min_submitted` ≥ 2 for agreement studies.
    """
    if min_submitted < 1:
        raise ValueError("min_submitted must be at least 1")
    data = copy.deepcopy(_base())
    data["distribution"] = {"strategy": "overlap", "min_submitted": int(min_submitted)}
    if dimensions is None:
        data["vectors"] = []
    else:
        for vector in data["vectors"]:
            vector["dimensions"] = int(dimensions)
    return data


def build_settings(settings: dict) -> Any:
    """An `rg.Settings` for `template(...)`. Needs a connected client: the SDK binds every property to one."""
    import argilla as rg

    # Settings.from_json reads a file; this is the same constructor without the round trip through disk.
    return rg.Settings._from_dict(copy.deepcopy(settings))


def signature(settings: dict) -> dict[str, Any]:
    """What must match for records to fit: property names, kinds, options, vector sizes and the distribution.

    Titles, descriptions and guidelines may differ (a team may reword them in the UI).
    """
    sig: dict[str, Any] = {}
    for field in settings.get("fields", []):
        sig[f"field {field['name']!r}"] = (field["settings"]["type"], bool(field.get("required")))
    for question in settings.get("questions", []):
        options = question["settings"].get("options")
        values = tuple(str(o["value"]) for o in options) if options else None
        sig[f"question {question['name']!r}"] = (question["settings"]["type"], bool(question.get("required")), values)
    for meta in settings.get("metadata", []):
        sig[f"metadata {meta['name']!r}"] = (meta["settings"]["type"],)
    for vector in settings.get("vectors", []):
        sig[f"vector {vector['name']!r}"] = (int(vector["dimensions"]),)
    distribution = settings.get("distribution") or {}
    sig["distribution"] = (distribution.get("strategy"), distribution.get("min_submitted"))
    return sig


def differences(ours: dict, theirs: dict) -> list[str]:
    """Human-readable differences between our settings and an existing dataset's (empty list = compatible)."""
    a, b = signature(ours), signature(theirs)
    out = []
    for key in a:
        if key not in b:
            out.append(f"{key} is missing")
        elif a[key] != b[key]:
            out.append(f"{key} is {_show(b[key])}, ours is {_show(a[key])}")
    out.extend(f"{key} is not in our template" for key in b if key not in a)
    return out


def _show(value: tuple) -> str:
    return "/".join("-" if v is None else (",".join(v) if isinstance(v, tuple) else str(v)) for v in value)
