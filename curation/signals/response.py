"""Detectors over the reply itself: refusals of harmless requests, empty or truncated replies, apologies,
error text, a reply in another language than the prompt, and extreme length."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache

from curation.signals.base import ConversationView, Signal, short

REFUSAL = re.compile(
    r"(\bI(?:'m| am)? (?:sorry,? )?(?:but )?(?:I )?(?:can(?:not|'t)|am unable to|'m unable to|won'?t|will not|"
    r"am not able to|'m not able to) (?:help|assist|provide|do|comply|create|write|fulfil+|generate|answer|support)|"
    r"\bas an AI(?: language model)?,? I (?:can(?:not|'t)|don'?t|do not|am not able)|"
    r"\bI(?:'m| am) not (?:allowed|permitted|programmed) to|\bI must decline\b|\bI can(?:not|'t) (?:help|assist) with that)",
    re.IGNORECASE,
)
# A refusal is only a failure when the request looks harmless; these words make a request look sensitive.
SENSITIVE = re.compile(
    r"\b(kill|murder|bomb|weapon|gun|explosive|poison|drugs?|meth|cocaine|hack|malware|ransomware|exploit|"
    r"suicide|self-harm|porn|nude|sex\w*|steal|fraud|launder|terror\w*|racis\w*|credit card number|password)\b",
    re.IGNORECASE,
)


class Refusal:
    """The reply refuses, and the prompt has none of the sensitive words that would justify a refusal."""

    name, weight = "refusal", 0.3

    def __call__(self, conv: ConversationView) -> Signal | None:
        hit = REFUSAL.search(conv.reply)
        if not hit or SENSITIVE.search(conv.prompt):
            return None
        return Signal(self.name, 1.0, f"refused a harmless-looking request: {short(hit.group(0))}")


class EmptyOrTruncated:
    """An empty reply (1.0), or one cut off: an unclosed code fence, or a long reply ending mid-word (0.7)."""

    name, weight = "empty_or_truncated", 0.35

    def __call__(self, conv: ConversationView) -> Signal | None:
        reply = conv.reply.strip()
        if not reply:
            return Signal(self.name, 1.0, "the reply is empty")
        if reply.count("```") % 2 == 1:
            return Signal(self.name, 0.7, "the reply ends inside an unclosed code block")
        tail = reply[-1]
        if len(reply) > 400 and (tail.isalnum() or tail in ",;:-(") and not reply.endswith(("...", "…")):
            last_line = reply.splitlines()[-1]
            # Lists, tables and code often end without a full stop; only prose that stops mid-sentence counts.
            if not re.match(r"\s*([-*|#>]|\d+[.)]|\s{4})", last_line) and len(last_line.split()) > 6:
                return Signal(self.name, 0.7, f"the reply stops mid-sentence: {short(reply[-40:], 40)}")
        return None


APOLOGY = re.compile(
    r"\b(I apologi[sz]e|my apologies|I'?m sorry for|sorry for the confusion|sorry about that|my mistake|"
    r"I made (a|an) (mistake|error))\b", re.IGNORECASE)


class Apology:
    """The reply apologises: the model admits an earlier reply was wrong, or hedges."""

    name, weight = "apology", 0.15

    def __call__(self, conv: ConversationView) -> Signal | None:
        hit = APOLOGY.search(conv.reply)
        return Signal(self.name, 1.0, f"the reply apologises: {short(hit.group(0))}") if hit else None


ERROR_TEXT = re.compile(
    r"(Traceback \(most recent call last\)|\bInternal Server Error\b|\b(rate limit|quota) exceeded\b|"
    r"\bcontext length exceeded\b|\bmaximum context length\b|\bAn error occurred\b|\bError: [A-Z]\w+Error\b|"
    r"\bnetwork error\b|\brequest timed out\b|<\|endoftext\|>|<\|im_end\|>|\bNone\b$|\bundefined\b$|^null$)",
    re.IGNORECASE | re.MULTILINE,
)


class ErrorText:
    """The reply contains error or template text that a model should never send (tracebacks, API errors, tokens)."""

    name, weight = "error_text", 0.3

    def __call__(self, conv: ConversationView) -> Signal | None:
        if "```" in conv.reply and "Traceback" in conv.reply:
            return None  # explaining a traceback inside a code block is a normal answer
        hit = ERROR_TEXT.search(conv.reply)
        return Signal(self.name, 1.0, f"error text in the reply: {short(hit.group(0))}") if hit else None


STOPWORDS = {
    "en": "the and is are you to of in that it for with this what how not be have",
    "es": "el la los las que de y es en por para una con no se del lo como",
    "de": "der die das und ist nicht ich du zu mit ein eine sie es wie auf den",
    "fr": "le la les et est des une que pour pas vous je dans ce qui du au",
    "pt": "o os as que de e não um uma para com em você do da é no na",
    "it": "il lo la che di e non un una per con sono gli della è le del",
}
STOPWORDS = {lang: set(words.split()) for lang, words in STOPWORDS.items()}
SCRIPTS = (("CYRILLIC", "cyrillic"), ("CJK", "cjk"), ("HIRAGANA", "ja"), ("KATAKANA", "ja"), ("HANGUL", "ko"),
           ("ARABIC", "ar"), ("HEBREW", "he"), ("GREEK", "el"), ("DEVANAGARI", "hi"), ("THAI", "th"))


@lru_cache(maxsize=4096)
def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return next((code for key, code in SCRIPTS if key in name), "latin")


def guess_language(text: str) -> str | None:
    """A coarse guess without models: the writing system, then stopwords for six Latin-script languages.

    Returns None when the text is too short or the evidence is weak, so that callers only act on clear cases.
    """
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)  # code says nothing about the language
    sample = text[:3000]
    if sample.isascii():  # the common case, and every ASCII letter is Latin: skip the per-character lookup
        if sum(map(str.isalpha, sample)) < 20:
            return None
        script = "latin"
    else:
        letters = [c for c in sample if c.isalpha()]
        if len(letters) < 20:
            return None
        script, count = Counter(map(_script, letters)).most_common(1)[0]
        if count < 0.6 * len(letters):
            return None
    if script != "latin":
        return script
    words = Counter(re.findall(r"[^\W\d_]+", sample.lower()))
    hits = Counter({lang: sum(words[w] for w in stop if w in words) for lang, stop in STOPWORDS.items()})
    (top, n1), (_, n2) = hits.most_common(2)
    return top if n1 >= 3 and n1 >= 2 * n2 else None


class LanguageMismatch:
    """The reply's language differs from the prompt's (only when both are guessed with confidence)."""

    name, weight = "language_mismatch", 0.25

    def __call__(self, conv: ConversationView) -> Signal | None:
        asked, answered = guess_language(conv.prompt), guess_language(conv.reply)
        if asked and answered and asked != answered:
            return Signal(self.name, 1.0, f"prompt in {asked}, reply in {answered}")
        return None


class ExtremeLength:
    """A one-line answer to a long question, or a reply far beyond what anyone reads (over `max_words`)."""

    name, weight = "extreme_length", 0.15

    def __init__(self, min_words: int = 4, long_prompt_words: int = 25, max_words: int = 2000):
        self.min_words, self.long_prompt_words, self.max_words = min_words, long_prompt_words, max_words

    def __call__(self, conv: ConversationView) -> Signal | None:
        reply_words, prompt_words = len(conv.reply.split()), len(conv.prompt.split())
        if 0 < reply_words < self.min_words and prompt_words >= self.long_prompt_words:
            return Signal(self.name, 1.0, f"a {reply_words}-word reply to a {prompt_words}-word prompt")
        if reply_words > self.max_words:
            return Signal(self.name, 0.5, f"a {reply_words}-word reply")
        return None


class LowReward:
    """The reward model scored the reply in its bottom `quantile` (default 10%); lower reward → stronger signal."""

    name, weight = "low_reward", 0.6

    def __init__(self, quantile: float = 0.1):
        self.quantile = quantile

    def __call__(self, conv: ConversationView) -> Signal | None:
        if conv.reward_pct is None or conv.reward_pct > self.quantile:
            return None
        value = 1.0 - conv.reward_pct / self.quantile if self.quantile else 1.0
        return Signal(self.name, max(0.2, value), f"reward {conv.reward:.3g} is in the bottom {self.quantile:.0%}")


def response_detectors() -> list:
    return [Refusal(), EmptyOrTruncated(), Apology(), ErrorText(), LanguageMismatch(), ExtremeLength(), LowReward()]
