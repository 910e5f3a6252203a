"""Log 50 chat calls through a wrapped `openai` client into a fresh Curate home, then count what the store holds.

    pip install 'curate[openai]'
    python docs/examples/log_openai.py --home /tmp/curate-openai-demo                  # the OpenAI API (OPENAI_API_KEY)
    python docs/examples/log_openai.py --base-url http://127.0.0.1:8000/v1 --model M   # any OpenAI-compatible server

Ten users chat five calls each (whole replies and streamed ones, alternately). Five of them dislike their fourth reply
and regenerate it, the other five like it and ask once more. The wrapper links each regeneration to the reply it
replaced (a `regenerated` feedback event), so `curate annotate push --pairs` can rate the two side by side.
The last line printed is a JSON summary: {"home", "conversations", "feedback", "spooled"}.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from openai import OpenAI

from curation import ConversationLogger
from curation.integrations.openai import wrap

QUESTIONS = ["How do I reverse a list in Python?", "What is a good name for a grey cat?",
             "Explain TCP slow start in two sentences.", "Is 2027 a prime number?", "Suggest a 20-minute dinner."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="a Curate home that does not exist yet (default: a new temporary folder)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="default: the OpenAI API")
    parser.add_argument("--model", default="gpt-4o-mini")
    args = parser.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="curate-openai-")) / "home"
    if (home / "curate.db").exists():
        parser.error(f"{home} holds a store already; name a fresh home")

    logger = ConversationLogger(home)
    client = wrap(OpenAI(base_url=args.base_url, max_retries=2), logger=logger)
    for user in range(10):
        history = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
        for turn in range(4):
            history.append({"role": "user", "content": QUESTIONS[(user + turn) % len(QUESTIONS)]})
            cid, text = ask(client, args.model, history, user, stream=turn % 2 == 1)
            history.append({"role": "assistant", "content": text})
        if user % 2:  # a thumbs down, then "regenerate": the same context sent again in the same session
            logger.feedback(cid, "thumbs_down")
            ask(client, args.model, history[:-1], user, stream=False)
        else:
            logger.feedback(cid, "thumbs_up")
            history.append({"role": "user", "content": "Thanks! One more tip?"})
            ask(client, args.model, history, user, stream=True)
    logger.close()  # writes what is queued; a store that cannot be written leaves it in the spool

    from curation.store import Store

    store = Store.open(home)
    with store.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM conversations").scalar()
        feedback = dict(conn.exec_driver_sql("SELECT type, count(*) FROM feedback GROUP BY type ORDER BY type").all())
    print(json.dumps({"home": str(home), "conversations": count, "feedback": feedback, "spooled": logger.spooled}))


def ask(client: OpenAI, model: str, messages: list[dict], user: int, stream: bool) -> tuple[str, str]:
    """One chat call in the user's session; returns (conversation id, reply text)."""
    common = dict(model=model, messages=messages, user=f"user-{user}", curate_session=f"chat-{user}",
                  curate_metadata={"app": "docs-example"}, max_tokens=200)
    if not stream:
        reply = client.chat.completions.create(**common)
        return reply.curate_id, reply.choices[0].message.content or ""
    chunks = client.chat.completions.create(**common, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return chunks.curate_id, text


if __name__ == "__main__":
    main()
