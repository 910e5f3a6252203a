"""A columnar, in-memory index of one Argilla dataset: what Elasticsearch holds for argilla-server, in numpy.

Each record owns one slot; per-slot facts live in growable numpy arrays so that the requests the web UI makes
on every page (a user's pending queue, a metadata range filter, a sort) are vector operations, not Python loops.
The index is a cache: the engine rebuilds it from argilla-server's database on start.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable
from uuid import UUID

import numpy as np

# Per-user response status codes; 0 means "no response" (pending for that user).
STATUS_CODES = {"draft": 1, "submitted": 2, "discarded": 3}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
_TOKEN = re.compile(r"\w+")
_SEPARATORS = re.compile(r"\W+")


def normalise_text(text: str) -> str:
    """Lower-cased words separated by single spaces, padded, so that ` word ` finds whole words with `in`."""
    return " " + _SEPARATORS.sub(" ", text.lower()).strip() + " "


def occurrences(text: str, needle: str) -> int:
    """How often the needle occurs, overlaps included (" a a " holds " a " twice: the words share a space)."""
    count, at = 0, text.find(needle)
    while at >= 0:
        count, at = count + 1, text.find(needle, at + 1)
    return count


@dataclass
class TextQueryTerms:
    """A parsed Elasticsearch `simple_query_string` (default operator AND): phrases, prefixes and negations."""

    required: list[str] = field(default_factory=list)  # padded needles that must occur
    excluded: list[str] = field(default_factory=list)  # padded needles that must not occur

    @classmethod
    def parse(cls, q: str) -> "TextQueryTerms":
        terms = cls()
        for match in re.finditer(r'(-?)"([^"]*)"|(-?)(\S+)', q):
            negated = bool(match.group(1) or match.group(3))
            raw = match.group(2) if match.group(2) is not None else match.group(4)
            if raw in {"|", "+", "AND", "OR"}:
                continue
            prefix = raw.endswith("*")
            tokens = _TOKEN.findall(raw.lower())
            if not tokens:
                continue
            needle = " " + " ".join(tokens) + ("" if prefix else " ")
            (terms.excluded if negated else terms.required).append(needle)
        return terms

    def score(self, text: str) -> float:
        """0 when the text does not match; otherwise how often the required terms occur (a crude relevance)."""
        if any(needle in text for needle in self.excluded):
            return 0.0
        total = 0
        for needle in self.required:
            count = occurrences(text, needle)
            if not count:
                return 0.0
            total += count
        return float(total) if self.required else 1.0


class DatasetIndex:
    """Slots of one dataset's records, with the columns that searches, sorts and progress counts need."""

    def __init__(self, fields: dict[str, str], metadata: dict[str, str], questions: Iterable[str] = ()):
        self.fields = dict(fields)  # field name -> "text" | "chat" | "custom" | "image"
        self.metadata_types = dict(metadata)  # property name -> "terms" | "integer" | "float"
        self.questions = set(questions)
        self.ids: list[UUID | None] = []
        self.slot_of: dict[UUID, int] = {}
        self.capacity = 0
        self.alive = np.zeros(0, dtype=bool)
        self.completed = np.zeros(0, dtype=bool)
        self.inserted_at = np.zeros(0, dtype=np.float64)
        self.updated_at = np.zeros(0, dtype=np.float64)
        self.n_responses = np.zeros(0, dtype=np.int32)
        self.external_id = np.zeros(0, dtype=object)
        self.text: dict[str, np.ndarray] = {}
        self.raw_metadata = np.zeros(0, dtype=object)
        self.numeric: dict[str, np.ndarray] = {}
        self.terms: dict[str, np.ndarray] = {}
        self.suggestions = np.zeros(0, dtype=object)  # slot -> {question: {"value","score","agent","type"}}
        self.responses = np.zeros(0, dtype=object)  # slot -> {user_id: {"id","status","values"}}
        self.user_status: dict[str, np.ndarray] = {}  # user id -> int8 code per slot
        self.vectors: dict[str, np.ndarray] = {}  # vector settings id -> unit-norm float32 rows
        self.has_vector: dict[str, np.ndarray] = {}
        self._order_cache: dict[tuple, np.ndarray] = {}

    # ---- storage -------------------------------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new = max(needed, 2 * self.capacity, 1024)

        def grown(array: np.ndarray, fill: Any = 0) -> np.ndarray:
            out = np.full((new,) + array.shape[1:], fill, dtype=array.dtype)
            out[: len(array)] = array
            return out

        self.alive, self.completed = grown(self.alive, False), grown(self.completed, False)
        self.inserted_at, self.updated_at = grown(self.inserted_at), grown(self.updated_at)
        self.n_responses = grown(self.n_responses)
        self.external_id, self.raw_metadata = grown(self.external_id, None), grown(self.raw_metadata, None)
        self.suggestions, self.responses = grown(self.suggestions, None), grown(self.responses, None)
        for name in self.text:
            self.text[name] = grown(self.text[name], "")
        for name in self.numeric:
            self.numeric[name] = grown(self.numeric[name], np.nan)
        for name in self.terms:
            self.terms[name] = grown(self.terms[name], None)
        for user in self.user_status:
            self.user_status[user] = grown(self.user_status[user])
        for key in self.vectors:
            self.vectors[key], self.has_vector[key] = grown(self.vectors[key]), grown(self.has_vector[key], False)
        self.capacity = new

    @property
    def size(self) -> int:
        return len(self.ids)

    def configure_metadata(self, name: str, kind: str) -> None:
        """Add (or re-type) a metadata column, filled from the metadata every record already carries."""
        self.metadata_types[name] = kind
        self.numeric.pop(name, None)
        self.terms.pop(name, None)
        for slot in range(self.size):
            self._set_metadata_value(slot, name, (self.raw_metadata[slot] or {}).get(name))
        self._order_cache.clear()

    def _column(self, name: str) -> np.ndarray:
        kind = self.metadata_types[name]
        if kind == "terms":
            if name not in self.terms:
                self.terms[name] = np.full(self.capacity, None, dtype=object)
            return self.terms[name]
        if name not in self.numeric:
            self.numeric[name] = np.full(self.capacity, np.nan, dtype=np.float64)
        return self.numeric[name]

    def _set_metadata_value(self, slot: int, name: str, value: Any) -> None:
        column = self._column(name)
        if self.metadata_types[name] == "terms":
            column[slot] = None if value is None else (tuple(map(str, value)) if isinstance(value, list) else (str(value),))
        else:
            try:
                column[slot] = np.nan if value is None else float(value)
            except (TypeError, ValueError):
                column[slot] = np.nan

    def upsert(self, doc: dict) -> None:
        """Index or replace one record. `doc` comes from the engine's mapping of an argilla-server Record."""
        slot = self.slot_of.get(doc["id"])
        if slot is None:
            slot = self.size
            self._grow(slot + 1)
            self.ids.append(doc["id"])
            self.slot_of[doc["id"]] = slot
        self.alive[slot] = True
        self.completed[slot] = doc["status"] == "completed"
        self.inserted_at[slot], self.updated_at[slot] = doc["inserted_at"], doc["updated_at"]
        self.external_id[slot] = doc.get("external_id")
        for name, text in doc["text"].items():
            if name not in self.text:
                self.text[name] = np.full(self.capacity, "", dtype=object)
            self.text[name][slot] = normalise_text(text)
        metadata = doc.get("metadata") or {}
        self.raw_metadata[slot] = metadata
        for name in self.metadata_types:
            self._set_metadata_value(slot, name, metadata.get(name))
        self.suggestions[slot] = doc.get("suggestions") or None
        for user in list((self.responses[slot] or {})):
            self.user_status[user][slot] = 0
        self.responses[slot] = None
        self.n_responses[slot] = 0
        for response in doc.get("responses", []):
            self.set_response(slot, response)
        for key, value in (doc.get("vectors") or {}).items():
            self.set_vector(slot, key, value)
        self._order_cache.clear()

    def set_vector(self, slot: int, key: str, value: list[float]) -> None:
        vector = np.asarray(value, dtype=np.float32)
        if key not in self.vectors:
            self.vectors[key] = np.zeros((self.capacity, len(vector)), dtype=np.float32)
            self.has_vector[key] = np.zeros(self.capacity, dtype=bool)
        norm = float(np.linalg.norm(vector))
        self.vectors[key][slot] = vector / norm if norm else vector
        self.has_vector[key][slot] = True

    def delete(self, record_id: UUID) -> None:
        slot = self.slot_of.pop(record_id, None)
        if slot is None:
            return
        self.alive[slot] = False
        self.ids[slot] = None
        for user in (self.responses[slot] or {}):
            self.user_status[user][slot] = 0
        self.responses[slot], self.n_responses[slot] = None, 0
        self._order_cache.clear()

    def set_status(self, record_id: UUID, status: str) -> None:
        slot = self.slot_of.get(record_id)
        if slot is not None:
            self.completed[slot] = status == "completed"

    def set_response(self, slot: int, response: dict) -> None:
        user = response["user_id"]
        responses = self.responses[slot] or {}
        if user not in responses:
            self.n_responses[slot] += 1
        responses[user] = response
        self.responses[slot] = responses
        if user not in self.user_status:
            self.user_status[user] = np.zeros(self.capacity, dtype=np.int8)
        self.user_status[user][slot] = STATUS_CODES.get(response["status"], 0)

    def remove_response(self, slot: int, user: str) -> None:
        responses = self.responses[slot] or {}
        if responses.pop(user, None) is not None:
            self.n_responses[slot] -= 1
            self.user_status[user][slot] = 0
        self.responses[slot] = responses or None

    def set_suggestion(self, slot: int, question: str, suggestion: dict | None) -> None:
        suggestions = dict(self.suggestions[slot] or {})
        if suggestion is None:
            suggestions.pop(question, None)
        else:
            suggestions[question] = suggestion
        self.suggestions[slot] = suggestions or None

    # ---- queries -------------------------------------------------------------------------------------------

    def live(self) -> np.ndarray:
        return self.alive[: self.size].copy()

    def user_codes(self, user: str) -> np.ndarray:
        codes = self.user_status.get(user)
        return np.zeros(self.size, dtype=np.int8) if codes is None else codes[: self.size]

    def text_scores(self, q: str, field_name: str | None) -> np.ndarray:
        """Relevance per slot (0 = no match) of a simple_query_string over one field or all of them.

        The same result as `TextQueryTerms.score` on each record, found by scanning one string that holds every
        record's text (C speed) and mapping match offsets back to slots.
        """
        terms = TextQueryTerms.parse(q)
        names = tuple([field_name] if field_name else [n for n, kind in self.fields.items() if kind != "image"])
        corpus, starts = self._corpus(names)

        def counts(needle: str) -> np.ndarray:
            hits, at = [], corpus.find(needle)
            while at >= 0:
                hits.append(at)
                at = corpus.find(needle, at + 1)
            slots = np.searchsorted(starts, np.asarray(hits, dtype=np.int64), side="right") - 1
            return np.bincount(slots, minlength=self.size)[: self.size]

        matched = self.alive[: self.size].copy()
        scores = np.zeros(self.size) if terms.required else np.ones(self.size)
        for needle in terms.required:  # AND: every required term occurs
            found = counts(needle)
            matched &= found > 0
            scores += found
        for needle in terms.excluded:
            matched &= counts(needle) == 0
        scores[~matched] = 0.0
        return scores

    def _corpus(self, names: tuple[str, ...]) -> tuple[str, np.ndarray]:
        """Every slot's fields joined by " | " (no needle spans it), slots joined by newlines; cached until a write."""
        cached = self._order_cache.get(("corpus",) + names)
        if cached is not None:
            return cached
        columns = [self.text[n][: self.size] for n in names if n in self.text]
        parts = [" | ".join(column[slot] for column in columns) for slot in range(self.size)]
        starts = np.zeros(self.size, dtype=np.int64)
        if parts:
            starts[1:] = np.cumsum([len(p) + 1 for p in parts[:-1]])
        self._order_cache[("corpus",) + names] = found = ("\n".join(parts), starts)
        return found

    def metadata_values(self, name: str) -> np.ndarray:
        if name not in self.metadata_types:
            return np.full(self.size, np.nan)
        return self._column(name)[: self.size]

    def slot_values(self, getter) -> np.ndarray:
        """A per-slot object array from a function of (slot) for the sparse columns (suggestions, responses)."""
        out = np.full(self.size, None, dtype=object)
        for slot in np.flatnonzero(self.alive[: self.size]):
            out[slot] = getter(slot)
        return out

    def cached_order(self, key: tuple, build) -> np.ndarray:
        """Slot permutations reused until the next write: the pending queue asks for the same one each page."""
        order = self._order_cache.get(key)
        if order is None or len(order) != self.size:
            order = self._order_cache[key] = build()
        return order


def sort_key(values: np.ndarray, descending: bool) -> np.ndarray:
    """A float key for np.lexsort that puts missing values last in both directions, as Elasticsearch does."""
    if values.dtype == object:
        present = np.array([v is not None for v in values], dtype=bool)
        flat = np.array([_scalar(v) for v in values], dtype=object)
        numeric = all(isinstance(v, (int, float)) for v in flat[present])
        if numeric:
            values = np.array([float(v) if p else np.nan for v, p in zip(flat, present)], dtype=np.float64)
        else:
            keys = np.array([str(v) if p else "" for v, p in zip(flat, present)], dtype=object)
            _, codes = np.unique(keys.astype(str), return_inverse=True)
            values = np.where(present, codes.astype(np.float64), np.nan)
    values = values.astype(np.float64)
    key = -values if descending else values.copy()
    key[np.isnan(key)] = np.inf
    return key


def _scalar(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value
