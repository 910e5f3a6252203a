"""The OpenAssistant (oasst1) message-tree export → root-to-leaf conversation threads.

Each line is one message; messages of a tree come together. A thread ends at its deepest assistant message, so every
message lands in at least one thread or is quarantined with the reason (a missing parent, a deleted ancestor, a
prompt nobody answered). Emojis are the production-style feedback: +1 → thumbs_up, -1 → thumbs_down, red_flag → flag,
on the assistant turn they were given to. Review labels and ranks are what annotators produce later, so they go only
into metadata under `oasst_review`, never into feedback.
"""
from __future__ import annotations

from typing import Any, Iterator

import orjson

from curation.ingest.readers import Item
from curation.ingest.records import Conversation, Limits, Reject, check_messages, feedback_row, hash_user, parse_time

EMOJI_FEEDBACK = {"+1": "thumbs_up", "-1": "thumbs_down", "red_flag": "flag"}
ROLE = {"prompter": "user", "assistant": "assistant"}
REVIEW_KEYS = ("rank", "review_count", "review_result", "synthetic", "deleted")


def conversations(items: Iterator[Item], limits: Limits) -> Iterator[tuple[list[Conversation], list[tuple[Item, str]], int]]:
    """Yield, per tree: (threads, rejected (item, reason) pairs, number of messages read)."""
    tree: list[Item] = []
    tree_id = None
    for item in items:
        obj = item.obj
        current = obj.get("message_tree_id") if isinstance(obj, dict) else None
        if tree and current != tree_id and current is not None:
            yield _threads(tree, limits)
            tree = []
        if current is not None:
            tree_id = current
        tree.append(item)
    if tree:
        yield _threads(tree, limits)


def _threads(items: list[Item], limits: Limits) -> tuple[list[Conversation], list[tuple[Item, str]], int]:
    rejected: list[tuple[Item, str]] = []
    by_id: dict[str, Item] = {}
    for item in items:
        reason = item.error or _check(item.obj)
        if reason:
            rejected.append((item, reason))
        else:
            by_id[item.obj["message_id"]] = item
    children: dict[str, list[str]] = {}
    roots = []
    for mid, item in by_id.items():
        parent = item.obj.get("parent_id")
        if parent is None:
            roots.append(mid)
        else:
            children.setdefault(parent, []).append(mid)
    placed: set[str] = set()
    threads: list[Conversation] = []
    reachable: set[str] = set()
    for root in roots:
        if by_id[root].obj["role"] != "prompter":
            continue
        for path in _paths(root, children):
            reachable.update(path)
            while path and by_id[path[-1]].obj["role"] != "assistant":
                path = path[:-1]
            if not path:
                continue
            try:
                threads.append(_conversation([by_id[m] for m in path], limits))
                placed.update(path)
            except Reject as exc:
                rejected.extend((by_id[m], f"thread ending at {path[-1]}: {exc}") for m in path if m not in placed)
    rejected_ids = {id(item) for item, _ in rejected}
    for mid, item in by_id.items():
        if mid in placed or id(item) in rejected_ids:
            continue
        obj = item.obj
        if mid not in reachable:
            parent = obj.get("parent_id")
            reason = (
                f"missing parent: parent message {parent} is not in the export or was rejected"
                if parent is not None
                else "tree root is not a prompter message"
            )
        else:
            reason = "prompter message with no assistant reply below it"
        rejected.append((item, reason))
    return threads, rejected, len(items)


def _check(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "record is not a JSON object"
    if not isinstance(obj.get("message_id"), str):
        return "oasst message without a 'message_id'"
    if not isinstance(obj.get("role"), str) or obj["role"] not in ROLE:
        return f"unknown oasst role {str(obj.get('role'))[:40]!r} (expected prompter or assistant)"
    if not isinstance(obj.get("text"), str) or not obj["text"].strip():
        return "oasst message 'text' must be a non-empty string"
    if obj.get("deleted"):
        return "deleted in the source export"
    return None


def _paths(root: str, children: dict[str, list[str]]) -> Iterator[list[str]]:
    stack = [[root]]
    while stack:
        path = stack.pop()
        kids = children.get(path[-1])
        if not kids:
            yield path
        else:
            stack.extend(path + [kid] for kid in reversed(kids))


def _conversation(items: list[Item], limits: Limits) -> Conversation:
    objs = [item.obj for item in items]
    messages = check_messages([{"role": ROLE[o["role"]], "content": o["text"]} for o in objs], limits)
    leaf = objs[-1]
    conv_id = f"oasst:{leaf['message_id']}"
    feedback = []
    review = {}
    for turn, obj in enumerate(objs):
        if obj["role"] != "assistant":
            continue
        emojis = obj.get("emojis") if isinstance(obj.get("emojis"), dict) else {}
        for name, count in zip(emojis.get("name") or [], emojis.get("count") or []):
            if isinstance(name, str) and name in EMOJI_FEEDBACK and count:
                feedback.append(feedback_row(conv_id, EMOJI_FEEDBACK[name], count, turn, None, ("emoji", obj["message_id"])))
        labels = obj.get("labels") if isinstance(obj.get("labels"), dict) else {}
        review[obj["message_id"]] = {
            "turn": turn,
            "labels": dict(zip(labels.get("name") or [], labels.get("value") or [])),
            **{key: obj.get(key) for key in REVIEW_KEYS},
        }
    metadata = {
        "source_format": "oasst",
        "message_tree_id": leaf.get("message_tree_id"),
        "message_ids": [o["message_id"] for o in objs],
        "lang": leaf.get("lang"),
        # human review of the source dataset: annotation truth for evaluation, never a production signal
        "oasst_review": review,
    }
    row = (  # CONVERSATION_COLUMNS
        conv_id,
        orjson.dumps(messages).decode(),
        leaf.get("model_name"),
        parse_time(leaf.get("created_date"), "created_date"),
        leaf.get("message_tree_id"),
        hash_user(objs[0].get("user_id"), limits.salt),
        orjson.dumps(metadata).decode(),
        len(messages),
    )
    return Conversation(row, feedback, tuple(item.line for item in items))
