"""Detectors over what users did: explicit feedback (thumbs, ratings, flags, comments) and implicit feedback
(regenerating, editing, abandoning, repeating the question, correcting the assistant)."""
from __future__ import annotations

import re

from curation.signals.base import ConversationView, Signal, short


class EventDetector:
    """Fires when the conversation has a feedback event of `event_type` (value 1)."""

    def __init__(self, name: str, event_type: str, weight: float, why: str):
        self.name, self.event_type, self.weight, self.why = name, event_type, weight, why

    def __call__(self, conv: ConversationView) -> Signal | None:
        events = conv.events(self.event_type)
        if not events:
            return None
        return Signal(self.name, 1.0, self.why + (f" ({len(events)}×)" if len(events) > 1 else ""))


def _count(event: dict) -> float:
    """Feedback may carry a count (oasst emojis: how many users pressed it); plain events count once."""
    value = event["value"]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 1.0


class Thumbs:
    """Thumbs on the rated reply (turn = the last assistant message, or unset); a flag counts as a thumbs down.

    `thumbs_down` fires with the posterior mean share of users who disliked the reply under a uniform prior,
    (downs + 1) / (downs + ups + 2): one down alone gives 0.67, three give 0.8, one down against three ups 0.33, so
    more people saying so is stronger evidence and ups dilute it. Downs only on earlier replies are about another
    reply and give a weak 0.2. `thumbs_up` (negative weight) fires only when the rated reply got ups and no downs.
    """

    def __init__(self, name: str):
        self.name = name
        self.weight = 0.9 if name == "thumbs_down" else -0.5

    def __call__(self, conv: ConversationView) -> Signal | None:
        last = conv.reply_index
        votes = {kind: [0.0, 0.0] for kind in ("thumbs_down", "flag", "thumbs_up")}  # [on the rated reply, earlier]
        for event in conv.events(*votes):
            votes[event["type"]][0 if event["turn"] in (None, last) else 1] += _count(event)
        (thumbs, down_early), (flags, _), (up, _) = votes["thumbs_down"], votes["flag"], votes["thumbs_up"]
        down = thumbs + flags
        if self.name == "thumbs_up":
            return Signal(self.name, 1.0, f"{up:g} thumbs up, none down") if up and not down else None
        if down:
            said = f"{thumbs:g} thumbs down" + (f", {flags:g} flag{'s' * (flags != 1)}" if flags else "")
            return Signal(self.name, (down + 1) / (down + up + 2), f"{said}, {up:g} up on the reply")
        if down_early:
            return Signal(self.name, 0.2, f"{down_early:g} thumbs down on an earlier reply")
        return None


class LowRating:
    """A user rating of 1–5: 1 → 1.0, 2 → 0.5, 3 and up → no signal. The lowest rating counts."""

    name, weight = "low_rating", 0.8

    def __call__(self, conv: ConversationView) -> Signal | None:
        values = [e["value"] for e in conv.events("rating") if isinstance(e["value"], (int, float))]
        if not values or min(values) > 2:
            return None
        return Signal(self.name, (3 - min(values)) / 2, f"user rated {min(values):g}/5")


NEGATIVE_WORDS = re.compile(
    r"\b(wrong|incorrect|useless|bad|terrible|awful|worse|worst|not helpful|unhelpful|doesn'?t work|didn'?t work|"
    r"does not work|did not work|broken|nonsense|hallucinat\w*|made up|inaccurate|false|mistake|error|fail\w*|"
    r"confus\w*|irrelevant|rude|lazy|too long|too short|not what i)\b",
    re.IGNORECASE,
)


class NegativeComment:
    """A free-text comment with negative words."""

    name, weight = "negative_comment", 0.6

    def __call__(self, conv: ConversationView) -> Signal | None:
        for event in conv.events("comment"):
            text = event["value"] if isinstance(event["value"], str) else ""
            hit = NEGATIVE_WORDS.search(text)
            if hit:
                return Signal(self.name, 1.0, f"comment says {short(hit.group(0))}: {short(text)}")
        return None


CORRECTION = re.compile(
    r"(\bthat'?s (not right|wrong|incorrect)|\bthat is (not right|wrong|incorrect)|\b(this|it|that|the code) "
    r"(still )?(doesn'?t|does not|didn'?t|did not) (work|compile|run)|\byou (didn'?t|did not|forgot|missed|ignored)\b|"
    r"\bno,? (that|this|it)'?s? (is )?not\b|\bnot what i (asked|wanted|meant)|\byou'?re wrong|\byou are wrong|"
    r"\bthat'?s not what|\bwrong answer|\bstill (wrong|not working|broken)|\bi (said|asked for)\b)",
    re.IGNORECASE,
)


class Correction:
    """A user turn after an assistant reply that corrects it ("that's wrong", "doesn't work", "you didn't …")."""

    name, weight = "correction", 0.3

    def __call__(self, conv: ConversationView) -> Signal | None:
        seen_reply = False
        for message in conv.messages:
            role = message.get("role")
            if role == "assistant":
                seen_reply = True
            elif role == "user" and seen_reply:
                text = message.get("content") if isinstance(message.get("content"), str) else ""
                hit = CORRECTION.search(text)
                if hit:
                    return Signal(self.name, 1.0, f"user corrected the assistant: {short(hit.group(0))}")
        return None


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + 2]) for i in range(max(1, len(words) - 1))} if words else set()


class RepeatedQuestion:
    """The user's next turn repeats or rephrases the previous one: the reply in between did not answer it.

    Similarity is the Jaccard overlap of word bigrams; `threshold` (default 0.5) is where it fires.
    """

    name, weight = "repeated_question", 0.25

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def __call__(self, conv: ConversationView) -> Signal | None:
        turns = conv.user_turns()
        best = 0.0
        for (_, previous), (_, current) in zip(turns, turns[1:]):
            a, b = _shingles(previous), _shingles(current)
            if a and b:
                best = max(best, len(a & b) / len(a | b))
        if best < self.threshold:
            return None
        return Signal(self.name, min(1.0, best), f"user repeated a question (overlap {best:.2f})")


def feedback_detectors() -> list:
    return [
        Thumbs("thumbs_down"),
        # a flag already counts as a thumbs down; a weight above 0 adds it again on top
        EventDetector("flag", "flag", 0.0, "user flagged the reply"),
        LowRating(),
        NegativeComment(),
        EventDetector("regenerated", "regenerated", 0.25, "user regenerated the reply"),
        EventDetector("edited", "edited", 0.2, "user edited the reply"),
        EventDetector("abandoned", "abandoned", 0.15, "user left right after the reply"),
        RepeatedQuestion(),
        Correction(),
        Thumbs("thumbs_up"),
    ]
