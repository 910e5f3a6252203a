"""The message forms of OpenTelemetry's GenAI conventions → OpenAI chat messages (for `curation.ingest.otel`).

- `gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions`: JSON, parts-based;
- the indexed attributes `gen_ai.prompt.{i}.role/content/tool_call_id/tool_calls.{j}.*` and `gen_ai.completion.{i}.*`;
- span events `gen_ai.{system,user,assistant,tool}.message` and `gen_ai.choice`, or `gen_ai.content.prompt` /
  `gen_ai.content.completion` with JSON lists.
Each raises `Reject` with the reason when a form is present but broken.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

from curation.ingest.records import Reject

EVENT_ROLES = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
               "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
INDEXED = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")


def json_value(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Reject(f"'{what}' is not valid JSON") from None
    return value


def parts_messages(value: Any, what: str, role: str | None = None) -> list[dict]:
    """The parts-based messages of the GenAI conventions (`[{role, parts: [{type, ...}], finish_reason?}]`)."""
    if value is None:
        return []
    value = json_value(value, what)
    if role is not None:  # system instructions: a list of parts, not of messages
        value = [{"role": role, "parts": value if isinstance(value, list) else [value]}]
    if not isinstance(value, list):
        raise Reject(f"'{what}' must be a list of messages")
    out = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("parts", []), list):
            raise Reject(f"'{what}' has a message that is not {{role, parts}}")
        texts, calls = [], []
        for part in message.get("parts") or ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("content") or ""))
            elif kind == "tool_call":
                arguments = part.get("arguments")
                calls.append({"id": part.get("id"), "type": "function", "function": {
                    "name": part.get("name"),
                    "arguments": arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()}})
            elif kind == "tool_call_response":
                response = part.get("response", part.get("result"))
                out.append({"role": "tool", "tool_call_id": part.get("id"),
                            "content": response if isinstance(response, str) else orjson.dumps(response).decode()})
            elif kind not in ("reasoning", None):
                texts.append(f"[{kind}]")
        if texts or calls:
            msg: dict = {"role": message.get("role"), "content": "\n".join(texts) if texts else None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    return out


def indexed_messages(attrs: dict, kind: str) -> list[dict]:
    """`gen_ai.prompt.{i}.role` / `.content` / `.tool_call_id` / `.tool_calls.{j}.{id,name,arguments}`."""
    by_index: dict[int, dict] = {}
    for key, value in attrs.items():
        match = INDEXED.fullmatch(key)
        if match is None or match[1] != kind:
            continue
        msg = by_index.setdefault(int(match[2]), {})
        field_name = match[3]
        if field_name.startswith("tool_calls."):
            _, j, name = (field_name.split(".", 2) + [""])[:3]
            msg.setdefault("_calls", {}).setdefault(int(j) if j.isdigit() else 0, {})[name] = value
        else:
            msg[field_name] = value
    out = []
    for _, msg in sorted(by_index.items()):
        calls = msg.pop("_calls", None)
        message = {"role": msg.get("role") or ("assistant" if kind == "completion" else "user"),
                   "content": as_text(msg.get("content"))}
        if msg.get("tool_call_id") is not None:
            message["tool_call_id"] = msg["tool_call_id"]
        if calls:
            message["tool_calls"] = [tool_call(calls[j]) for j in sorted(calls)]
        out.append(message)
    return out


def event_messages(events: list[tuple[Any, dict]], prompt: bool) -> list[dict]:
    out: list[dict] = []
    for name, attrs in events:
        body = json_value(attrs["gen_ai.event.content"], "gen_ai.event.content") if "gen_ai.event.content" in attrs else attrs
        body = body if isinstance(body, dict) else {"content": body}
        if prompt and name in EVENT_ROLES:
            message = {"role": body.get("role") or EVENT_ROLES[name], "content": as_text(body.get("content"))}
            if body.get("tool_calls"):
                message["tool_calls"] = [tool_call(c) for c in json_value(body["tool_calls"], "tool_calls")]
            if EVENT_ROLES[name] == "tool" and body.get("id") is not None:
                message["tool_call_id"] = body["id"]
            out.append(message)
        elif not prompt and name == "gen_ai.choice":
            message = json_value(body.get("message"), "message") if body.get("message") is not None else body
            message = message if isinstance(message, dict) else {"content": message}
            reply = {"role": "assistant", "content": as_text(message.get("content"))}
            if message.get("tool_calls"):
                reply["tool_calls"] = [tool_call(c) for c in json_value(message["tool_calls"], "tool_calls")]
            out.append(reply)
        elif name in ("gen_ai.content.prompt", "gen_ai.content.completion") and prompt == name.endswith("prompt"):
            listed = json_value(attrs.get("gen_ai.prompt" if prompt else "gen_ai.completion"), name)
            for message in listed if isinstance(listed, list) else ():
                if isinstance(message, dict):
                    out.append({**message, "content": as_text(message.get("content"))})
    return out


def tool_call(call: Any) -> dict:
    call = call if isinstance(call, dict) else {}
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    return {"id": call.get("id"), "type": "function", "function": {
        "name": function.get("name"),
        "arguments": arguments if isinstance(arguments, str) or arguments is None else orjson.dumps(arguments).decode()}}


def as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return orjson.dumps(value).decode()
