"""The failure model: a calibrated classifier of P(failure) learned from people's ratings.

    FailureModel(n_tabular=…).fit(X, y, groups=…).predict_proba(X)[:, 1]

X's columns are, in order: `n_tabular` tabular features (the prior failure score, each signal's value, feedback
counts, the reward), one column with the conversation's cluster id (−1 = none), then the embedding. From the cluster column the model
derives the cluster's observed failure rate among rated conversations, smoothed towards the overall rate. On the
training rows that rate is computed out of fold (grouped like the outer cross-validation), so a row's own label never
feeds its own feature; at prediction it comes from all training rows. The classifier is a logistic regression on the
standardised tabular features and a few principal components of the embedding (fitted once per fit, without
labels), calibrated by Platt scaling
(`CalibratedClassifierCV`, sigmoid) on grouped folds. It follows scikit-learn's rules, so `clone` and CV just work.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

RATE = "cluster failure rate"
EMBEDDING = "embedding (what it is about)"


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold splits (a group never on both sides) whose training side holds both classes; [] when impossible."""
    n_splits = min(n_splits, len(np.unique(groups)))
    if n_splits < 2:
        return []
    folds = list(GroupKFold(n_splits=n_splits).split(np.zeros(len(y)), y, groups))
    return [(tr, te) for tr, te in folds if len(np.unique(y[tr])) == 2]


def smoothed_rates(cluster_train: np.ndarray, y_train: np.ndarray, strength: float, p0: float) -> dict[int, float]:
    """{cluster: (failures + strength·p₀) / (rated + strength)} from the rated rows given. p₀ is the overall rate of
    all training rows, never a fold's: a fold's own rate would leak (a failure lowers the rate of the other folds)."""
    rates = {}
    for c in np.unique(cluster_train):
        if c < 0:
            continue
        member = cluster_train == c
        rates[int(c)] = float((y_train[member].sum() + strength * p0) / (member.sum() + strength))
    return rates


class Emphasis(TransformerMixin, BaseEstimator):
    """Multiply the `columns` (default the first, the standardised prior) by `factor`: their L2 penalty becomes
    factor² weaker, so the fit starts from them and the other features only correct them as far as the ratings
    support."""

    def __init__(self, factor: float = 1.0, columns: tuple[int, ...] = (0,)):
        self.factor = factor
        self.columns = columns

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X):
        X = np.array(X, dtype=np.float64)
        X[:, list(getattr(self, "columns", (0,)))] *= self.factor  # a fit stored before `columns` existed: the prior's
        return X


class FailureModel(ClassifierMixin, BaseEstimator):
    """Calibrated P(failure) from tabular features, the cluster's out-of-fold failure rate and the embedding.

    n_tabular: how many leading columns of X are tabular features (the next one is the cluster id).
    n_components: principal components kept of the embedding (0 = leave the embedding out).
    C: inverse strength of the logistic regression's L2 penalty (strong by default: a few hundred ratings, collinear signals).
    rate_strength: pseudo-count pulling a cluster's observed failure rate towards the overall rate.
    n_splits: grouped folds for the out-of-fold cluster rate and for calibration.
    prior_emphasis: scale of the prior failure score's (first) column after standardising; > 1 weakens its penalty.
    emphasised: the tabular columns that get `prior_emphasis` (default the prior's alone; the fit adds the judge's
        verdict, a second whole source whose weight the ratings should be free to set, from "ignore it" to "trust
        it almost fully").
    random_state: kept for scikit-learn's conventions (every step here is deterministic).
    """

    def __init__(self, n_tabular: int = 1, n_components: int = 8, C: float = 0.05, rate_strength: float = 5.0,
                 n_splits: int = 3, prior_emphasis: float = 10.0, emphasised: tuple[int, ...] = (0,),
                 random_state: int = 0):
        self.prior_emphasis = prior_emphasis
        self.emphasised = emphasised
        self.n_tabular = n_tabular
        self.n_components = n_components
        self.C = C
        self.rate_strength = rate_strength
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=int)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        self.classes_ = np.array([0, 1])
        cluster = X[:, self.n_tabular].astype(int)
        self.base_rate_ = float(y.mean())
        rate = np.full(len(y), self.base_rate_)
        folds = grouped_folds(y, groups, self.n_splits)
        for tr, te in folds:
            rates = smoothed_rates(cluster[tr], y[tr], self.rate_strength, self.base_rate_)
            rate[te] = [rates.get(c, self.base_rate_) for c in cluster[te]]
        self.oof_rate_ = rate  # the training rows' cluster rate, each from the other folds only
        self.cluster_rates_ = smoothed_rates(cluster, y, self.rate_strength, self.base_rate_)
        # the embedding's components are fitted once, without labels (so no fold needs its own): covariance_eigh
        # costs one dim × dim eigendecomposition, whatever the number of ratings
        emb = X[:, self.n_tabular + 1 :]
        k = min(self.n_components, emb.shape[1], max(len(y) - 1, 0) // 2)
        self.pca_ = PCA(n_components=k, svd_solver="covariance_eigh").fit(emb) if k > 0 else None
        Z = self._design(X, rate)
        base = Pipeline([("scale", StandardScaler()), ("prior", Emphasis(self.prior_emphasis, tuple(self.emphasised))), ("classifier", LogisticRegression(C=self.C, max_iter=1000))])
        calibration = [(tr, te) for tr, te in folds if len(np.unique(y[te])) == 2]
        if len(calibration) >= 2:
            self.estimator_ = CalibratedClassifierCV(base, method="sigmoid", cv=calibration).fit(Z, y)
        else:  # too few failures to hold some out: the logistic regression's own probabilities
            self.estimator_ = base.fit(Z, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        cluster = X[:, self.n_tabular].astype(int)
        rate = np.array([self.cluster_rates_.get(c, self.base_rate_) for c in cluster])
        return self.estimator_.predict_proba(self._design(X, rate))

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def contributions(self, X) -> np.ndarray:
        """Each feature group's push on the log-odds (tabular features, the cluster rate, the embedding summed),
        averaged over the calibrated copies: columns n_tabular + 2, positive = towards failure."""
        X = np.asarray(X, dtype=np.float64)
        cluster = X[:, self.n_tabular].astype(int)
        rate = np.array([self.cluster_rates_.get(c, self.base_rate_) for c in cluster])
        Z = self._design(X, rate)
        pipes = ([c.estimator for c in self.estimator_.calibrated_classifiers_]
                 if isinstance(self.estimator_, CalibratedClassifierCV) else [self.estimator_])
        out = np.zeros((len(X), self.n_tabular + 2))
        for pipe in pipes:
            terms = pipe[:-1].transform(Z) * pipe[-1].coef_[0]
            out[:, : self.n_tabular + 1] += terms[:, : self.n_tabular + 1]
            out[:, -1] += terms[:, self.n_tabular + 1 :].sum(axis=1)
        return out / len(pipes)

    def _design(self, X: np.ndarray, rate: np.ndarray) -> np.ndarray:
        parts = [X[:, : self.n_tabular], rate[:, None]]
        if self.pca_ is not None:
            parts.append(self.pca_.transform(X[:, self.n_tabular + 1 :]))
        return np.hstack(parts)
