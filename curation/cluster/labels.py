"""Readable cluster labels: keywords by class-based TF-IDF over each cluster's texts (as BERTopic's c-TF-IDF).

A labeller is any object with `label(texts: dict[cluster_id, list[str]]) -> dict[cluster_id, (label, keywords)]`,
where each cluster's texts come most central first. Pass another one to `curation.cluster.cluster(labeller=...)`;
`llm_labels.LLMLabeller` asks an OpenAI-compatible chat endpoint to name each cluster from these keywords.
"""
from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

# Words that appear in every chat and so never describe a topic.
CHAT_WORDS = frozenset("""please help want need like know make use using write give tell just thanks thank hi hello
hey ok okay sure yes does did doing way good new example examples answer question questions following can could
would should im ive dont id ill thats""".split())
STOP_WORDS = list(ENGLISH_STOP_WORDS | CHAT_WORDS)


class CTfidfLabeller:
    """Keywords that are frequent in one cluster and rare in the others.

    Weight of term t in cluster c: tf(t, c) / |c| · log(1 + A / f(t)), where |c| is the cluster's word count,
    f(t) the term's count over all clusters and A the mean word count per cluster. The label joins the top
    `label_words` keywords.
    """

    def __init__(self, n_keywords: int = 8, label_words: int = 3, ngram_range: tuple[int, int] = (1, 2)):
        self.n_keywords = n_keywords
        self.label_words = label_words
        self.ngram_range = ngram_range

    def label(self, texts: dict[int, list[str]]) -> dict[int, tuple[str, list[str]]]:
        ids = [cid for cid, docs in texts.items() if docs]
        if not ids:
            return {}
        docs = [" ".join(_clean(t) for t in texts[cid]) for cid in ids]
        vectorizer = CountVectorizer(stop_words=STOP_WORDS, ngram_range=self.ngram_range, min_df=1,
                                     token_pattern=r"(?u)\b[^\W\d_][\w+#.-]*[\w+#]\b|\b[^\W\d_]{2,}\b",
                                     max_features=200_000)
        try:
            counts = vectorizer.fit_transform(docs).astype(np.float64)
        except ValueError:  # only stop words
            return {cid: (f"cluster {cid}", []) for cid in ids}
        words = vectorizer.get_feature_names_out()
        sizes = np.asarray(counts.sum(axis=1)).ravel()
        totals = np.asarray(counts.sum(axis=0)).ravel()
        idf = np.log1p(sizes.mean() / np.maximum(totals, 1))
        out = {}
        for row, cid in enumerate(ids):
            tf = counts.getrow(row)
            scores = tf.data / max(sizes[row], 1) * idf[tf.indices]
            order = tf.indices[np.argsort(-scores, kind="stable")]
            keywords = _dedupe([words[i] for i in order[: self.n_keywords * 3]])[: self.n_keywords]
            label = " / ".join(keywords[: self.label_words]) if keywords else f"cluster {cid}"
            out[cid] = (label, keywords)
        return out


def _clean(text: str) -> str:
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)  # code blocks swamp the vocabulary
    return re.sub(r"https?://\S+", " ", text)[:2000]


def _dedupe(keywords: list[str]) -> list[str]:
    """Drop a unigram when a kept bigram already contains it, and vice versa, so keywords say different things."""
    kept: list[str] = []
    for word in keywords:
        parts = set(word.split())
        if any(parts <= set(k.split()) or set(k.split()) <= parts for k in kept):
            continue
        kept.append(word)
    return kept
