"""Log every chat completion of an `openai` client (extra `curate[openai]`):

    from openai import OpenAI
    from curation.integrations.openai import wrap, last_conversation_id

    client = wrap(OpenAI())                      # or wrap(AsyncOpenAI()), wrap(client, logger=ConversationLogger(...))
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history, user=user_id,
                                           curate_session=chat_id, curate_metadata={"app": "support"})
    logger.feedback(reply.curate_id, "thumbs_down")   # or last_conversation_id()

`wrap` patches the client in place and returns it, so it stays an `OpenAI` (type checks, `isinstance`, IDE help).
`chat.completions.create` and `parse` are logged, streamed or not (a stream when it ends, sync and async), and so is
`chat.completions.stream`, which calls `create`; `with_options`/`copy` give wrapped copies. Not logged: the
`with_raw_response`/`with_streaming_response` variants and the Responses API. Curate's keyword arguments
(`curate_session`, `curate_metadata`) are taken out before the SDK sees them. Logging goes through
`ConversationLogger`, so it never blocks the call and never raises into it; an unreachable store spools.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, TypeVar

from curation.integrations.recorder import Assembler, Recorder, last_id
from curation.logger import ConversationLogger, default_logger

__all__ = ["wrap", "last_conversation_id"]
Client = TypeVar("Client")
log = logging.getLogger("curate.integrations")
_WRAPPED = "_curate_recorder"


def wrap(client: Client, logger: ConversationLogger | None = None, regeneration_window: float = 3600.0) -> Client:
    """Log every chat completion `client` makes; returns the same client. Wrapping twice changes nothing.

    The conversation id of a call is `response.curate_id` (a stream has it as soon as `create` returns), and
    `last_conversation_id()` in the calling context. A call that sends the same messages as an earlier call in
    the same session (`curate_session=`, else the `user` parameter) within `regeneration_window` seconds is a
    regeneration: the earlier reply gets a `regenerated` feedback event and the new one `metadata.regenerates`.
    """
    completions = client.chat.completions  # type: ignore[attr-defined]
    if getattr(completions, _WRAPPED, None) is not None:
        return client
    _patch(client, Recorder(logger or default_logger(), regeneration_window))
    return client


def last_conversation_id() -> str | None:
    """The conversation id of the newest chat completion started in this context (thread or asyncio task)."""
    return last_id.get()


def _patch(client: Any, recorder: Recorder) -> None:
    completions = client.chat.completions
    for name in ("create", "parse"):
        original = getattr(completions, name, None)
        if original is None:
            continue
        # AsyncCompletions.create is a sync decorator around an async def: look through to what it wraps
        make = _async_method if inspect.iscoroutinefunction(inspect.unwrap(original)) else _sync_method
        setattr(completions, name, make(original, recorder))
    setattr(completions, _WRAPPED, recorder)
    copy = client.copy

    @functools.wraps(copy)
    def wrapped_copy(*args: Any, **kwargs: Any) -> Any:
        new = copy(*args, **kwargs)
        _patch(new, recorder)
        return new

    client.copy = client.with_options = wrapped_copy


def _sync_method(original: Any, recorder: Recorder) -> Any:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        call = recorder.start(kwargs)
        result = original(*args, **kwargs)
        if kwargs.get("stream") is not True:
            recorder.response(call, result)
            return result
        return _watch_stream(result, call, recorder, _sync_chunks)

    return create


def _async_method(original: Any, recorder: Recorder) -> Any:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        call = recorder.start(kwargs)
        result = await original(*args, **kwargs)
        if kwargs.get("stream") is not True:
            recorder.response(call, result)
            return result
        return _watch_stream(result, call, recorder, _async_chunks)

    return create


def _watch_stream(stream: Any, call: Any, recorder: Recorder, chunks: Any) -> Any:
    """Pass the stream's chunks through an assembler that logs the reply when the stream ends or is closed.

    The SDK's Stream and AsyncStream iterate `self._iterator`; swapping it keeps the object the app gets the SDK's own.
    """
    if call is None:
        return stream
    try:
        inner = stream._iterator
    except AttributeError:
        log.warning("curate: this openai version's streams have no _iterator; streamed calls are not logged")
        return stream
    try:
        watched = stream._iterator = chunks(inner, call, recorder)
        stream.curate_id = call.id
        last_id.set(call.id)
        close = stream.close
        if inspect.iscoroutinefunction(close):
            async def aclose() -> None:
                try:
                    await close()
                finally:
                    await watched.aclose()

            stream.close = aclose
        else:
            def sync_close() -> None:
                try:
                    close()
                finally:
                    watched.close()

            stream.close = sync_close
    except Exception:  # logging must never break the serving app
        log.exception("curate: could not watch a streamed chat completion")
    return stream


def _sync_chunks(inner: Any, call: Any, recorder: Recorder) -> Any:
    assembler, ended = Assembler(), "abandoned"
    try:
        for chunk in inner:
            assembler.add(chunk)
            yield chunk
        ended = None
    except Exception as exc:
        ended = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        recorder.stream_end(call, assembler, ended)


async def _async_chunks(inner: Any, call: Any, recorder: Recorder) -> Any:
    assembler, ended = Assembler(), "abandoned"
    try:
        async for chunk in inner:
            assembler.add(chunk)
            yield chunk
        ended = None
    except Exception as exc:
        ended = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        recorder.stream_end(call, assembler, ended)
