"""Fuzz: 10,000 malformed and adversarial lines, interleaved with valid records, never crash ingest or lose a record."""
from __future__ import annotations

import itertools

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.config import IngestSettings
from curation.ingest import ingest

EXAMPLES, LINES_PER_EXAMPLE = 50, 200  # 50 × 200 = 10,000 lines
counter = itertools.count()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
RESERVED = {"messages", "conversations", "message_id", "conversation_id"}
good_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=30)})


def _bad_record():
    """Records that are JSON but break exactly one rule."""
    assistant = {"role": "assistant", "content": "ok"}
    return st.one_of(
        st.dictionaries(st.text(max_size=8).filter(lambda k: k not in RESERVED), json_values, max_size=4),
        st.lists(json_values, max_size=3),
        st.builds(lambda m: {"messages": m}, st.lists(good_message, max_size=3)),  # no assistant turn
        st.builds(lambda r: {"messages": [{"role": r, "content": "x"}, assistant]},
                  st.text(max_size=10).filter(lambda r: r not in {"system", "user", "assistant", "tool", "developer", "function"})
                  | json_values.filter(lambda r: not isinstance(r, str))),  # lists and objects are unhashable
        st.builds(lambda c: {"messages": [{"role": "user", "content": c}, assistant]},
                  json_values.filter(lambda c: not isinstance(c, str) and c is not None)),
        st.builds(lambda t: {"messages": [{"role": "user", "content": "q"}, assistant], "created_at": t},
                  st.text(min_size=1, max_size=12).filter(lambda t: not t.strip()[:1].isdigit())),
        st.builds(lambda f: {"messages": [{"role": "user", "content": "q"}, assistant], "feedback": [{"type": f}]},
                  st.text(max_size=10).filter(lambda f: f not in {"thumbs_down", "thumbs_up", "rating", "comment", "flag",
                                                                   "regenerated", "edited", "abandoned"})
                  | json_values.filter(lambda f: not isinstance(f, str))),
        st.just({"messages": [{"role": "user", "content": "q" * 2_000}, assistant]}),  # over max_chars below
        st.just({"messages": [{"role": "user", "content": "q"}, assistant] * 40}),  # over max_messages below
    ).map(orjson.dumps)


raw_garbage = st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b and b.strip() and not b.strip().startswith((b"{", b"[")))
deep = st.integers(1_100, 3_000).map(lambda n: b"[" * n + b"]" * n)  # past orjson's recursion limit
bad_line = st.one_of(_bad_record(), raw_garbage, deep, st.binary(min_size=2, max_size=20).map(lambda b: b'{"messages": "' + b.replace(b"\n", b"") + b'\xff"}'))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(kinds=st.lists(st.one_of(st.just(None), bad_line), min_size=LINES_PER_EXAMPLE, max_size=LINES_PER_EXAMPLE))
def test_fuzz_no_crash_no_loss(store, tmp_path, kinds):
    lines, good_ids = [], []
    for bad in kinds:
        if bad is None:
            cid = f"good-{next(counter)}"
            good_ids.append(cid)
            lines.append(orjson.dumps({"id": cid, "messages": [{"role": "user", "content": cid}, {"role": "assistant", "content": "a"}]}))
        else:
            lines.append(bad)
    path = tmp_path / f"fuzz-{next(counter)}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = ingest(store, [path], settings=IngestSettings(max_chars=1_000, max_messages=50), progress=False)
    n_bad = len(lines) - len(good_ids)
    assert summary["read"] == len(lines)
    assert summary["read"] == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    assert summary["ingested"] == len(good_ids) and summary["quarantined"] == n_bad
    if n_bad:
        entries = [orjson.loads(x) for x in open(summary["quarantine_file"], "rb")]
        assert len(entries) == n_bad and all(e["reason"] and e["line"] >= 1 for e in entries)
    from curation.store import existing_ids
    from curation.store.tables import conversations

    with store.connect() as conn:
        assert existing_ids(conn, conversations.c.id, good_ids) == set(good_ids)
