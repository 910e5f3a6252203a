"""A development set from an OpenAssistant (oasst1) message-tree export: sibling replies ranked by humans.

Every parent message with two or more ranked assistant replies gives all its (better, worse) reply pairs; rank 0
is best. The context is the thread from the tree's root to the parent. Pairs are split by conversation tree, so no
context (nor any prefix of it) is on both sides. Use it to build and compare reward models, never as a production
signal: these are someone else's users and raters.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import orjson

ROLES = {"prompter": "user", "assistant": "assistant"}


def _label(message: dict, name: str) -> float | None:
    labels = message.get("labels") or {}
    names = labels.get("name") or []
    return labels["value"][names.index(name)] if name in names else None


def oasst_pairs(path: str | Path) -> list[dict]:
    """TRL conversational pairs with `margin` (rank gap), `context_id`, `tree_id` and `source`."""
    messages = {m["message_id"]: m for m in map(orjson.loads, Path(path).read_bytes().splitlines()) if m}
    children = defaultdict(list)
    for m in messages.values():
        if m.get("parent_id"):
            children[m["parent_id"]].append(m)
    pairs = []
    for parent_id, replies in sorted(children.items()):
        ranked = sorted((r for r in replies if r["role"] == "assistant" and r.get("rank") is not None),
                        key=lambda r: r["rank"])
        if len(ranked) < 2 or parent_id not in messages:
            continue
        context = _thread(messages, parent_id)
        for better, worse in combinations(ranked, 2):
            if better["rank"] == worse["rank"]:
                continue
            pairs.append({
                "prompt": context,
                "chosen": [{"role": "assistant", "content": better["text"]}],
                "rejected": [{"role": "assistant", "content": worse["text"]}],
                "margin": float(worse["rank"] - better["rank"]),
                "context_id": parent_id, "tree_id": better["message_tree_id"], "source": Path(path).stem,
            })
    return pairs


def oasst_ratings(path: str | Path) -> list[dict]:
    """Rated assistant replies: oasst's 0–1 `helpfulness` → helpfulness 0–4, 1 − `fails_task` → correctness 0–4;
    the other three HelpSteer2 attributes have no oasst counterpart and stay missing (masked in the loss)."""
    messages = {m["message_id"]: m for m in map(orjson.loads, Path(path).read_bytes().splitlines()) if m}
    rows = []
    for m in messages.values():
        helpful, fails = _label(m, "helpfulness"), _label(m, "fails_task")
        if m["role"] != "assistant" or m.get("deleted") or m["parent_id"] not in messages or helpful is None:
            continue
        rows.append({"prompt": _thread(messages, m["parent_id"]), "response": [{"role": "assistant", "content": m["text"]}],
                     "helpfulness": 4 * helpful, "correctness": None if fails is None else 4 * (1 - fails),
                     "coherence": None, "complexity": None, "verbosity": None, "tree_id": m["message_tree_id"]})
    return rows


def split_by_tree(rows: list[dict], test_size: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic split keeping each conversation tree on one side."""
    def bucket(tree: str) -> float:
        return int(hashlib.sha256(f"{seed}:{tree}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = [r for r in rows if bucket(r["tree_id"]) >= test_size]
    test = [r for r in rows if bucket(r["tree_id"]) < test_size]
    return train, test


def _thread(messages: dict, leaf_id: str) -> list[dict]:
    out = []
    node = messages.get(leaf_id)
    while node is not None:
        out.append({"role": ROLES[node["role"]], "content": node["text"]})
        node = messages.get(node.get("parent_id"))
    return out[::-1]
