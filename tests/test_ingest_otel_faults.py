"""`ingest --format otel`: one malformed span is quarantined with its reason and never stops the good ones; a span
id stored with other content is a conflict, as in the other formats (issue 22)."""
from __future__ import annotations

import orjson

from curation.ingest.otel import Reader
from curation.ingest.records import Limits
from tests.test_ingest_otel import attr, export, span, stored


def chat(n: int, **attributes) -> dict:
    return span(n, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.prompt.0.role": "user",
                    "gen_ai.prompt.0.content": f"question {n}", "gen_ai.completion.0.role": "assistant",
                    "gen_ai.completion.0.content": f"answer {n}", **attributes})


def with_raw(s: dict, key: str, value) -> dict:
    """`s` with one attribute whose OTLP value is written as given (however wrong)."""
    return {**s, "attributes": [*s["attributes"], {"key": key, "value": value}]}


DEEP = {"stringValue": "DEEP"}  # stands for a value nested past orjson's limit, which orjson cannot write


def deep_array(levels: int) -> bytes:
    return b'{"arrayValue":{"values":[' * levels + b'{"stringValue":"bottom"}' + b"]}}" * levels


BAD = {  # span number → (span, the words its quarantine reason must have)
    901: (with_raw(chat(901), "gen_ai.usage.input_tokens", {"intValue": "abc"}), "intValue 'abc' is not an integer"),
    902: (with_raw(chat(902), "gen_ai.usage.output_tokens", {"intValue": None}), "intValue null is not an integer"),
    903: (with_raw(chat(903), "gen_ai.usage.input_tokens", {"stringValue": "lots"}), "not a count of tokens"),
    904: ({**chat(904), "attributes": 5}, "'attributes' must be a list, not a number"),
    905: (with_raw(chat(905), "gen_ai.response.finish_reasons", DEEP), "nested deeper than 32 levels"),
}


def test_bad_spans_are_quarantined_with_their_reasons_and_the_good_ones_kept(cli, store, tmp_path):
    good = [chat(i) for i in range(1, 54)]
    good[7] = with_raw(good[7], "gen_ai.usage.input_tokens", {"stringValue": "12"})  # a count written as text
    bad_resource = orjson.loads(export(chat(906)))
    bad_resource["resourceSpans"][0]["resource"] = "oops"
    lines = [export(*good[:20], BAD[901][0], BAD[902][0]), export(BAD[903][0], *good[20:40], BAD[904][0]),
             export(*good[40:], BAD[905][0]).replace(orjson.dumps(DEEP), deep_array(250)), orjson.dumps(bad_resource)]
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    summary = cli.json("ingest", path, "--format", "otel")
    assert summary["read"] == 59 and summary["ingested"] == 53 and summary["quarantined"] == 6
    found = stored(store)
    assert {c["messages"][-1]["content"] for c in found.values()} == {f"answer {i}" for i in range(1, 54)}
    assert found[f"otel:{8:032x}:{8:016x}"]["metadata"]["usage"] == {"input_tokens": 12}
    reasons = {orjson.loads(line)["reason"] for line in open(summary["quarantine_file"], "rb")}
    for number, (_, words) in BAD.items():
        assert any(r.startswith(f"span {number:016x}: ") and words in r for r in reasons), (number, reasons)
    assert any(r.startswith(f"span {906:016x}: its resource cannot be read") for r in reasons), reasons


def test_one_export_request_at_a_time_gives_rejected_spans_for_partial_success():
    reader = Reader(Limits())
    request = orjson.loads(export(chat(1), BAD[901][0], chat(2)))
    found, rejected, read = reader.read_export(request, "collect")
    assert read == 3 and len(found) == 2 and [conv.id for conv, _, _ in found] == [
        f"otel:{1:032x}:{1:016x}", f"otel:{2:032x}:{2:016x}"]
    assert len(rejected) == 1 and "intValue 'abc'" in rejected[0][1]
    assert list(reader.finish()) == []


def test_a_span_id_stored_with_other_content_is_a_conflict(cli, store, tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(export(chat(1), chat(2)) + b"\n")
    changed = chat(1)
    changed["attributes"] = [a if a["key"] != "gen_ai.completion.0.content" else attr(a["key"], "another answer")
                             for a in changed["attributes"]]
    second.write_bytes(export(changed, chat(2)) + b"\n")
    cli.json("ingest", first, "--format", "otel")
    summary = cli.json("ingest", second, "--format", "otel")
    assert summary["conflicts"] == 1 and summary["duplicates"] == 1 and summary["quarantined"] == 1
    assert stored(store)[f"otel:{1:032x}:{1:016x}"]["messages"][-1]["content"] == "answer 1"  # the first stays
