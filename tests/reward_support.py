"""Helpers for the reward and preference-export tests: a store holding real oasst1 replies rated per the
annotation stage's table contract, and tiny training settings so that training tests take seconds."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import orjson

from annotations.template import ATTRIBUTES
from curation.store import Store, dumps, insert_rows, utcnow

TINY = {"max_steps": 2, "max_length": 64, "batch_size": 4}


def sibling_groups(oasst_file: Path, n_groups: int) -> list[tuple[list[dict], list[dict]]]:
    """(context messages, ranked replies best first) for the first parents with ≥2 ranked replies."""
    messages = {m["message_id"]: m for m in map(orjson.loads, oasst_file.read_bytes().splitlines())}
    children = defaultdict(list)
    for m in messages.values():
        if m["parent_id"] and m["role"] == "assistant" and m.get("rank") is not None:
            children[m["parent_id"]].append(m)
    groups = []
    for parent_id, replies in sorted(children.items()):
        if len(replies) < 2 or parent_id not in messages:
            continue
        thread, node = [], messages[parent_id]
        while node is not None:
            thread.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
            node = messages.get(node["parent_id"])
        groups.append((thread[::-1], sorted(replies, key=lambda r: r["rank"])))
        if len(groups) == n_groups:
            break
    return groups


def seed_ratings(store: Store, oasst_file: Path, n_groups: int = 24, annotators: tuple[str, str] = ("ann1", "ann2")) -> dict:
    """Conversations = real sibling replies; ratings follow the human rank (helpfulness 4 − rank).

    Per group: every reply rated alone (rule a); the top two also as a preference record (rule b, strength −2 =
    A better); the first group's worst reply gets a rewrite (rule c); thumbs on the top two (rule d).
    Every fourth group's records are flagged for disagreement. Clusters: group index mod 3.
    """
    from annotations.tables import rating_responses, ratings
    from curation.store.failure_tables import cluster_assignments
    from curation.store.tables import conversations, feedback

    now, run = utcnow(), store.start_run("pull", {})
    conv, rate, resp, fb, assign = [], [], [], [], []
    info = {"groups": [], "flagged": set()}
    for g, (context, replies) in enumerate(sibling_groups(oasst_file, n_groups)):
        ids = []
        flagged = int(g % 4 == 3)
        for reply in replies:
            cid = f"oa-{reply['message_id'][:12]}"
            ids.append(cid)
            conv.append({"id": cid, "messages": dumps(context + [{"role": "assistant", "content": reply["text"]}]),
                         "n_messages": len(context) + 1, "ingested_at": now, "source": "oasst"})
            assign.append({"conversation_id": cid, "cluster_id": g % 3, "run_id": run, "novel": 0})
            values = {a: None for a in ATTRIBUTES} | {"helpfulness": float(max(0, 4 - reply["rank"])), "correctness": 3.0}
            rate.append({"record_id": cid, "dataset": "ds", "conversation_id": cid, "conversation_id_b": None,
                         "n_annotators": 2, **values, "preference": None, "disagreement": flagged,
                         "annotators": dumps(list(annotators)), "run_id": run, "updated_at": now})
            for ann in annotators:
                rewrite = "A better, corrected answer written by the annotator." if (g == 0 and reply is replies[-1] and ann == annotators[0]) else None
                resp.append({"id": f"{cid}:{ann}", "dataset": "ds", "record_id": cid, "conversation_id": cid,
                             "conversation_id_b": None, "annotator": ann, "status": "submitted", **values,
                             "preference": None, "justification": None, "rewrite": rewrite, "updated_at": now,
                             "pulled_at": now, "run_id": run})
        pref_id = f"{ids[0]}|{ids[1]}"
        rate.append({"record_id": pref_id, "dataset": "ds", "conversation_id": ids[0], "conversation_id_b": ids[1],
                     "n_annotators": 2, **{a: None for a in ATTRIBUTES}, "preference": -2.0, "disagreement": flagged,
                     "annotators": dumps(list(annotators)), "run_id": run, "updated_at": now})
        for cid, kind in ((ids[0], "thumbs_up"), (ids[1], "thumbs_down")):
            fb.append({"id": hashlib.sha256(f"{cid}{kind}".encode()).hexdigest(), "conversation_id": cid, "type": kind,
                       "value": None, "turn": None, "at": now, "run_id": run})
        info["groups"].append(ids)
        if flagged:
            info["flagged"].update(ids)
    with store.begin() as conn:
        for table, rows in ((conversations, conv), (ratings, rate), (rating_responses, resp), (feedback, fb),
                            (cluster_assignments, assign)):
            insert_rows(conn, table, rows)
    store.finish_run(run, "done", {})
    info["run_id"] = run
    return info


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def tiny_decoder(folder: Path) -> Path:
    """A tiny randomly initialised Llama (decoder-only) with a chat template, saved locally: stands in for
    "any HF decoder base" without a download. Uses the bundled MiniLM tokenizer's vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from loops.reward.trainer import default_base

    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(default_base())
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
