"""One chat-completion call → one logged conversation: the request snapshot, the reply (whole or assembled from
stream chunks), and the link from a regeneration to the reply it replaced.

Nothing here knows the `openai` package: replies are read by attribute name (`choices`, `message`, `delta`,
`usage`, …), as the OpenAI chat-completions protocol names them. Every public method swallows its own errors,
because logging must never break the serving app.
"""
from __future__ import annotations

import contextvars
import hashlib
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import orjson

from curation.logger import ConversationLogger

log = logging.getLogger("curate.integrations")
CURATE_KWARGS = ("curate_metadata", "curate_session")  # taken out of the call before the SDK sees it
PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "n", "stop", "presence_penalty",
          "frequency_penalty", "reasoning_effort")
last_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("curate_last_conversation_id", default=None)
_id_key = os.urandom(32)
_id_counter = itertools.count()


def new_id() -> str:
    """A random-looking, unguessable conversation id, 32 hex digits like a uuid4's, that never releases the GIL:
    `uuid4()` reads os.urandom, and that system call lets the app's other threads take the GIL, for milliseconds
    when they are busy (it made the wrapper's p99 7 ms with 8 threads). A keyed hash of a counter; the key is drawn
    again in a forked child, so two workers of one app never share ids."""
    return hashlib.blake2b(next(_id_counter).to_bytes(8, "little"), key=_id_key, digest_size=16).hexdigest()


def _new_id_key() -> None:
    global _id_key
    _id_key = os.urandom(32)


os.register_at_fork(after_in_child=_new_id_key)


class Call:
    """What the wrapper knows of one call before the reply: its id, the request snapshot, when it started."""

    __slots__ = ("id", "messages", "model", "user", "session", "metadata", "params", "key", "started", "created")

    def __init__(self, kwargs: dict):
        self.id = new_id()
        self.started = time.perf_counter()
        self.created = time.time()
        messages = kwargs.get("messages")
        if messages is not None and not isinstance(messages, (list, tuple)):  # an iterator: the SDK must still get it
            messages = kwargs["messages"] = list(messages)
        # a copy now: apps append to their history list as soon as the call returns
        self.messages = [_message(m) for m in messages or ()]
        self.model = kwargs.get("model")
        self.user = _given(kwargs.get("user")) or _given(kwargs.get("safety_identifier"))
        self.session = None
        self.metadata: dict = {}
        self.params = {k: kwargs[k] for k in PARAMS if _given(kwargs.get(k)) is not None}
        tools = kwargs.get("tools")
        if _given(tools):
            self.params["tools"] = [_tool_name(t) for t in tools]
        self.key = None


class Recorder:
    """Turns calls and their replies into `ConversationLogger` records; links regenerations within a session."""

    def __init__(self, logger: ConversationLogger, regeneration_window: float = 3600.0, max_contexts: int = 10_000):
        self.logger = logger
        self.window = regeneration_window
        self.max_contexts = max_contexts
        self._contexts: OrderedDict[tuple, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kwargs: dict) -> Call | None:
        """Take Curate's own keyword arguments out of `kwargs` and snapshot the request; None if that failed."""
        ours = {k: kwargs.pop(k) for k in CURATE_KWARGS if k in kwargs}
        try:
            call = Call(kwargs)
            call.metadata = dict(ours.get("curate_metadata") or {})
            call.session = _given(ours.get("curate_session"))
            scope = call.session or call.user
            if scope is not None:  # without a session or user, the same prompt from two people is no regeneration
                call.key = (scope, _context_key(call.messages))
            return call
        except Exception:  # logging must never break the serving app
            log.exception("curate: could not record a chat completion request")
            return None

    def response(self, call: Call | None, response: Any) -> None:
        """Log a whole (not streamed) ChatCompletion."""
        if call is None:
            return
        try:
            latency = time.perf_counter() - call.started
            replies = [(c.index, _reply(c.message), c.finish_reason) for c in response.choices or ()]
            self._log(call, replies, response.id, response.model, _usage(response.usage), latency, None)
            _tag(response, call.id, len(replies))
            last_id.set(call.id)
        except Exception:  # logging must never break the serving app
            log.exception("curate: could not log a chat completion")

    def stream_end(self, call: Call | None, chunks: "Assembler", ended: str | None) -> None:
        """Log a streamed reply once its stream is over; `ended` is None when it ran to the end, else how it stopped
        ("abandoned": the app closed it early; otherwise the error that broke it)."""
        if call is None or (chunks.first is None and ended is not None):
            return  # nothing arrived: there is no reply to log
        try:
            latency = time.perf_counter() - call.started
            extra = {"ttft_ms": round((chunks.first - call.started) * 1000, 3)} if chunks.first else {}
            if ended and ended != "abandoned":
                extra["stream_error"] = ended[:300]
            self._log(call, chunks.replies(), chunks.id, chunks.model, chunks.usage, latency, extra,
                      abandoned=ended == "abandoned")
        except Exception:  # logging must never break the serving app
            log.exception("curate: could not log a streamed chat completion")

    def _log(self, call: Call, replies: list[tuple[int, dict, str | None]], response_id: str | None,
             model: str | None, usage: dict | None, latency: float, extra: dict | None, abandoned: bool = False) -> None:
        if not replies:
            return
        info = {"response_id": response_id, "request_model": call.model, "latency_ms": round(latency * 1000, 3),
                **(extra or {}), "usage": usage, "params": call.params or None}
        previous = self._regenerated(call) if call.key is not None else None
        for index, reply, finish in replies:
            conv_id = call.id if index == 0 else f"{call.id}-{index}"  # n > 1: siblings of one context
            openai_info = {k: v for k, v in info.items() if v is not None}
            openai_info["finish_reason"] = finish
            if len(replies) > 1:
                openai_info["choice"] = index
            metadata = {**call.metadata, "openai": openai_info}
            if previous is not None:
                metadata["regenerates"] = previous
            feedback = [{"type": "abandoned"}] if abandoned else None
            self.logger.log([*call.messages, reply], id=conv_id, model=model or call.model, user_id=call.user,
                            session_id=call.session, metadata=metadata, created_at=call.created, feedback=feedback)
        if previous is not None:
            self.logger.feedback(previous, "regenerated")

    def _regenerated(self, call: Call) -> str | None:
        """The reply this call regenerates (same context, same session, within the window), and remember this one."""
        now = time.monotonic()
        with self._lock:
            earlier = self._contexts.pop(call.key, None)
            self._contexts[call.key] = (call.id, now)
            if len(self._contexts) > self.max_contexts:
                self._contexts.popitem(last=False)
        if earlier is not None and now - earlier[1] <= self.window:
            return earlier[0]
        return None


class Assembler:
    """Collects stream chunks into whole replies, one per choice index, tool calls included."""

    __slots__ = ("id", "model", "usage", "first", "_choices")

    def __init__(self):
        self.id = self.model = self.usage = self.first = None
        self._choices: dict[int, list] = {}  # index → [content parts, tool calls by index, finish reason, refusal]

    def add(self, chunk: Any) -> None:
        try:
            if self.first is None:
                self.first = time.perf_counter()
                self.id, self.model = getattr(chunk, "id", None), getattr(chunk, "model", None)
            if getattr(chunk, "usage", None) is not None:  # the last chunk, with stream_options include_usage
                self.usage = _usage(chunk.usage)
            for choice in chunk.choices or ():
                slot = self._choices.get(choice.index)
                if slot is None:
                    slot = self._choices[choice.index] = [[], {}, None, []]
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        slot[0].append(delta.content)
                    if delta.tool_calls:
                        for part in delta.tool_calls:
                            _add_tool_call(slot[1], part)
                    if getattr(delta, "refusal", None):
                        slot[3].append(delta.refusal)
                if choice.finish_reason:
                    slot[2] = choice.finish_reason
        except Exception:  # a chunk we cannot read must not break the app's stream
            log.exception("curate: could not read a stream chunk")

    def replies(self) -> list[tuple[int, dict, str | None]]:
        out = []
        for index in sorted(self._choices):
            content, calls, finish, refusal = self._choices[index]
            message: dict = {"role": "assistant", "content": "".join(content) if content else None}
            if calls:
                message["tool_calls"] = [calls[i] for i in sorted(calls)]
            out.append((index, _finish_message(message, "".join(refusal)), finish))
        return out


def _add_tool_call(calls: dict, part: Any) -> None:
    call = calls.get(part.index)
    if call is None:
        call = calls[part.index] = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    if part.id:
        call["id"] = part.id
    function = part.function
    if function is not None:
        if function.name:
            call["function"]["name"] += function.name
        if function.arguments:
            call["function"]["arguments"] += function.arguments


def _reply(message: Any) -> dict:
    """A ChatCompletionMessage as an OpenAI chat message dict."""
    out: dict = {"role": "assistant", "content": message.content}
    calls = getattr(message, "tool_calls", None)
    if calls:
        out["tool_calls"] = [{"id": c.id, "type": c.type,
                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in calls if getattr(c, "function", None) is not None]
    return _finish_message(out, getattr(message, "refusal", None))


def _finish_message(message: dict, refusal: str | None) -> dict:
    """A refusal becomes the text of the reply; a reply with neither text nor tool calls has empty text."""
    if message["content"] is None and not message.get("tool_calls"):
        message["content"] = refusal or ""
        if refusal:
            message["refusal"] = True
    return message


def _message(m: Any) -> dict:
    """A request message as a plain dict with text content (content parts are joined; images, audio and files
    become a placeholder such as "[image_url]", never their data)."""
    if not isinstance(m, dict):
        m = m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else dict(m)
    out = dict(m)
    content = out.get("content")
    if content is not None and type(content) is not str:
        out["content"] = _text(content)
    return out


def _text(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            texts.append((part.get("text") or part.get("refusal") or "") if kind in ("text", "refusal", None) else f"[{kind}]")
    return "\n".join(t for t in texts if t)


def _context_key(messages: list[dict]) -> int:
    """What a regeneration shares with the reply it replaces: the request messages (Python's string hash is cached
    on the string, so a history the app sends again costs little to key)."""
    return hash(tuple((m.get("role"), m.get("content"), m.get("tool_call_id"),
                       orjson.dumps(m["tool_calls"]) if m.get("tool_calls") else None) for m in messages))


def _usage(usage: Any) -> dict | None:
    if usage is None:
        return None
    out = {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {k: v for k, v in out.items() if v is not None} or None


def _tag(response: Any, conv_id: str, choices: int) -> None:
    """Give the caller the id on the response without making it part of the response's JSON."""
    object.__setattr__(response, "curate_id", conv_id)
    if choices > 1:
        object.__setattr__(response, "curate_ids", [conv_id] + [f"{conv_id}-{i}" for i in range(1, choices)])


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict):
        return (tool.get("function") or {}).get("name") or tool.get("name") or tool.get("type")
    return getattr(getattr(tool, "function", None), "name", None)


def _given(value: Any) -> Any:
    """None for the SDK's "not given" markers (NOT_GIVEN, omit) as well as None."""
    if value is None or type(value).__name__ in ("NotGiven", "Omit"):
        return None
    return value
