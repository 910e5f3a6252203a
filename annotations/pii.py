"""PII redaction: personal data and secrets are replaced by typed placeholders before a record leaves the store.

Detectors run in priority order and a later one never touches text an earlier one claimed, so `user:pw@host` in
a URL is one `[URL_CREDENTIALS]`, not an email. Matches that have a checksum are validated (Luhn for cards, mod-97
for IBANs, `ipaddress` for IPs) because precision matters as much as recall: a redacted price or date makes a
response unreadable to the annotator. Measured on our planted test set: see docs/annotation.md.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

PLACEHOLDERS = {
    "url_credentials": "[URL_CREDENTIALS]",
    "secret": "[SECRET]",
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}
KINDS = tuple(PLACEHOLDERS)


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int


# --- credentials in URLs: scheme://user:password@host → scheme://[URL_CREDENTIALS]@host -----------------------------
_URL_CREDS = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://([^\s/:@]+:[^\s/@]+)@")

# --- API keys and tokens: known formats, plus the value of an obvious `secret = …` assignment ----------------------
_SECRET_FORMATS = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")"
)
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd"
    r"|client[_-]?secret|bearer)"
    r"(?:\s*[:=]\s*|\s+)[\"']?([A-Za-z0-9_\-./+=!@#$%^&*]{8,})"
)

_SECRET_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "gh", "github_pat_", "glpat-", "xox", "AKIA", "ASIA", "AIza", "hf_", "eyJ")
_SECRET_WORDS = ("key", "secret", "token", "passw", "pwd", "bearer")

# --- emails ---------------------------------------------------------------------------------------------------------
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")

# --- IBAN: country, check digits, then the country's exact length, spaces allowed between groups -------------------
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN_START = re.compile(r"\b([A-Z]{2})(\d{2})(?=[ ]?[A-Z0-9])")

# --- payment cards: known issuer prefixes, 13–19 digits in groups, Luhn-valid --------------------------------------
_CARD = re.compile(r"(?<![\d+-])(?:3[47]|4|5[1-5]|2[2-7]|6(?:011|5)|35|3[068])\d{0,3}(?:[ -]?\d){9,16}(?![\d])")

# --- IP addresses -----------------------------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?(?![\w:])")

# --- phone numbers: international (+CC …), North American (…) …-…, or national trunk-0 numbers ----------------------
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"  # never start inside a longer run of digit groups
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}"  # +44 20 7946 0958, +1 (415) 555-0123, +4930901820
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (415) 555-0123
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 415-555-0123, 415.555.0123
    r"|0\d{1,4}(?:[ -]\d{2,8}){1,4}"  # 020 7946 0958, 07700 900123, 01 23 45 67 89
    r")(?![\w])"
)
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _issuer_length_ok(digits: str) -> bool:
    """Each network issues fixed lengths; checking them keeps Luhn's 1-in-10 false positives off other numbers."""
    n = len(digits)
    if digits[:2] in ("34", "37"):
        return n == 15
    if digits[:2] in ("30", "36", "38"):
        return 14 <= n <= 19
    if digits[0] == "4":
        return n in (13, 16, 19)
    if digits[0] in "25":
        return n == 16
    return 16 <= n <= 19  # Discover 6011/65, JCB 35


def _iban_valid(iban: str) -> bool:
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _find_url_credentials(text: str) -> Iterator[tuple[int, int]]:
    if "://" in text:
        for m in _URL_CREDS.finditer(text):
            yield m.span(1)


def _find_secrets(text: str) -> Iterator[tuple[int, int]]:
    # substring checks in C first: the regexes are the slowest part of redaction on ordinary prose
    if any(prefix in text for prefix in _SECRET_PREFIXES):
        for m in _SECRET_FORMATS.finditer(text):
            yield m.span()
    lowered = text.lower()
    if not any(word in lowered for word in _SECRET_WORDS):
        return
    for m in _SECRET_ASSIGNMENT.finditer(text):
        value = m.group(1)
        # a plain word after "password" is prose ("the password manager"); a secret has a digit or a symbol
        if any(c.isdigit() for c in value) or not value.isalpha():
            yield m.span(1)


def _find_emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" in text:
        for m in _EMAIL.finditer(text):
            yield m.span()


def _find_ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(m.group(1))
        if length is None:
            continue
        chars, pos = [], m.start()
        while pos < len(text) and len(chars) < length:
            ch = text[pos]
            if ch.isascii() and ch.isalnum():
                chars.append(ch.upper())
            elif not (ch == " " and pos + 1 < len(text) and text[pos + 1].isalnum()):
                break
            pos += 1
        if len(chars) == length and not (pos < len(text) and text[pos].isalnum()) and _iban_valid("".join(chars)):
            yield m.start(), pos


def _find_cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if _issuer_length_ok(digits) and _luhn(digits):
            yield m.span()


def _find_ips(text: str) -> Iterator[tuple[int, int]]:
    if "." in text:
        for m in _IPV4.finditer(text):
            parts = [int(part) for part in m.group().split(".")]
            # 0.0.0.0 and 127.x name this machine, not a person or a network: not worth hiding from annotators
            if all(p <= 255 for p in parts) and parts[0] not in (0, 127):
                yield m.span()
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            candidate = m.group()
            if candidate.count(":") < 2 or candidate.strip(":") == "":
                continue
            try:
                address = ipaddress.IPv6Address(candidate.split("%")[0])
            except ValueError:
                continue
            if not (address.is_loopback or address.is_unspecified):
                yield m.span()


def _find_phones(text: str) -> Iterator[tuple[int, int]]:
    for m in _PHONE.finditer(text):
        candidate = m.group()
        n_digits = sum(c.isdigit() for c in candidate)
        if not 9 <= n_digits <= 15 or _DATE_LIKE.match(candidate):
            continue
        # "0 10 20 30" style lists of small numbers are not phones: a national number has few, long groups
        if candidate[0] == "0" and max(len(g) for g in re.split(r"[ -]", candidate)) < 2:
            continue
        yield m.span()


_DIGIT = re.compile(r"\d")
_NEED_DIGITS = frozenset({"iban", "card", "ip", "phone"})  # none of these can match text without a digit

_DETECTORS: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
    "url_credentials": _find_url_credentials,
    "secret": _find_secrets,
    "email": _find_emails,
    "iban": _find_ibans,
    "card": _find_cards,
    "ip": _find_ips,
    "phone": _find_phones,
}


class Redactor:
    """Finds and replaces PII. `kinds` picks the detectors (default: all, in priority order)."""

    def __init__(self, kinds: Iterable[str] | None = None):
        self.kinds = tuple(KINDS if kinds is None else kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, earlier detectors first."""
        taken: list[Span] = []
        has_digit = _DIGIT.search(text) is not None
        for kind in self.kinds:
            if kind in _NEED_DIGITS and not has_digit and not (kind == "ip" and "::" in text):
                continue
            for start, end in _DETECTORS[kind](text):
                if all(end <= s.start or start >= s.end for s in taken):
                    taken.append(Span(kind, start, end))
        return sorted(taken, key=lambda s: s.start)

    def redact(self, text: str) -> str:
        if not text:
            return text
        spans = self.find(text)
        if not spans:
            return text
        out, pos = [], 0
        for span in spans:
            out.append(text[pos : span.start])
            out.append(PLACEHOLDERS[span.kind])
            pos = span.end
        out.append(text[pos:])
        return "".join(out)

    def redact_messages(self, messages: list[dict]) -> list[dict]:
        """OpenAI chat messages with every text content redacted (string content or a list of text parts)."""
        out = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                content = self.redact(content)
            elif isinstance(content, list):
                content = [
                    {**part, "text": self.redact(part["text"])} if isinstance(part, dict) and isinstance(part.get("text"), str) else part
                    for part in content
                ]
            out.append({**message, "content": content})
        return out


_DEFAULT = Redactor()


def redact(text: str) -> str:
    """Replace every kind of PII in `text` by its placeholder."""
    return _DEFAULT.redact(text)
