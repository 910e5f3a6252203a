"""One rule for "the text of a message", shared by embedding, failure signals, clusters, annotation and reward models."""
from __future__ import annotations

import math

import pytest

from curation.messages import content_text

PARTS = [{"type": "text", "text": "Look at this:"}, {"type": "image_url", "image_url": {"url": "http://x/a.png"}},
         {"type": "text", "text": ""}, {"type": "text", "text": "what is it?"}]


@pytest.mark.parametrize(("content", "text"), [
    ("plain text", "plain text"),
    ("", ""),
    (None, ""),
    (PARTS, "Look at this:\nwhat is it?"),  # text parts joined by a newline; images and empty parts dropped
    ([{"type": "text", "text": 5}, "stray", {"type": "text", "text": "ok"}], "ok"),
    ([], ""),
    ({"answer": "42", "score": 1}, "42"),  # an export that wraps the answer
])
def test_content_text(content, text):
    assert content_text({"role": "user", "content": content}) == text


def test_a_message_without_content_is_empty():
    assert content_text({"role": "assistant", "tool_calls": [{"id": "t"}]}) == ""


def test_every_stage_reads_the_same_text():
    from curation.messages import context_key
    from curation.cluster.rank import prompt_of
    from curation.embed.views import last_turn
    from curation.signals import ConversationView
    from loops.reward.render import length_feature, plain_context

    user = {"role": "user", "content": PARTS}
    reply = {"role": "assistant", "content": [{"type": "text", "text": "A cat."}, {"type": "text", "text": "Cute."}]}
    joined = "Look at this:\nwhat is it?"
    assert last_turn([user, reply]) == "Look at this: what is it?\nA cat. Cute."  # the view collapses whitespace
    assert prompt_of([user, reply]) == joined
    view = ConversationView("c", [user, reply], [])
    assert (view.prompt, view.reply, view.user_turns()) == (joined, "A cat.\nCute.", [(0, joined)])
    assert plain_context([user]) == f"User: {joined}"
    assert length_feature(reply) == pytest.approx(math.log1p(len("A cat.\nCute.")))
    assert context_key([user, reply]) == context_key([{"role": "user", "content": joined}, reply])
