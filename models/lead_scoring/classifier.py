"""The trained model's configuration (``LeadModelConfig``) and the estimators of its pipeline: a
regularised logistic regression, then gradient-boosted trees on what it misses
(``LinearBoostedClassifier``), and the description's text signal (``TextSignal``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

from ..pickling import LEAD_SCORING, pickled_as


@pickled_as(LEAD_SCORING)
@dataclass(frozen=True)
class LeadModelConfig:
    learning_rate: float = 0.06
    max_iter: int = 300  # most boosting stages; early stopping on the newest leads picks how many
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    subsample: float = 0.8
    linear_c: float = 1.0  # inverse L2 strength of the logistic regression the trees start from
    validation_share: float = 0.2  # newest share of the training leads: chooses the number of trees
    early_stopping_rounds: int = 50  # stages without a better validation ROC AUC before stopping
    min_field_leads: int = 20  # a field with values in fewer training leads is dropped
    min_category_leads: int = 20  # categories seen in fewer training leads are grouped as other
    max_categories: int = 30  # a categorical field keeps at most this many values (other included)
    identifier_share: float = 0.5  # more distinct values than this share of its leads: an identifier
    numeric_share: float = 0.95  # a custom field is numeric when this share of its values are numbers
    min_text_leads: int = 50  # leads with a description needed for the text signal
    text_max_features: int = 2_000
    random_state: int = 0

    def as_params(self) -> dict[str, Any]:
        return dict(self.__dict__)


@pickled_as(LEAD_SCORING)
class LinearInputs(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """The logistic regression's view of the design matrix: continuous columns standardised (after
    log1p when non-negative and long-tailed), 0/1 columns left as they are, so that the L2 penalty
    shrinks the effect of a rare category more than that of a common one. A continuous value is
    extrapolated at most one training range beyond the training minimum and maximum (a trend may
    go on; a typo such as a billion page views must not decide a score alone)."""

    def fit(self, X: Any, y: Any = None) -> LinearInputs:
        X = np.asarray(X, dtype=float)
        binary = np.all((X == 0) | (X == 1), axis=0)
        mean, spread = X.mean(axis=0), X.std(axis=0)
        skew = (((X - mean) / np.where(spread > 0, spread, 1.0)) ** 3).mean(axis=0)
        self.log_ = ~binary & (X.min(axis=0, initial=0.0) >= 0) & (skew > 2.0)
        Z = self._logged(X)
        low, high = Z.min(axis=0, initial=np.inf), Z.max(axis=0, initial=-np.inf)
        self.low_ = np.where(binary, -np.inf, low - (high - low))
        self.high_ = np.where(binary, np.inf, high + (high - low))
        self.mean_ = np.where(binary, 0.0, Z.mean(axis=0))
        scale = np.where(binary, 1.0, Z.std(axis=0))
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def _logged(self, X: np.ndarray) -> np.ndarray:
        if not self.log_.any():
            return X
        out = X.copy()
        out[:, self.log_] = np.log1p(np.maximum(X[:, self.log_], 0.0))
        return out

    def transform(self, X: Any) -> np.ndarray:
        Z = np.clip(self._logged(np.asarray(X, dtype=float)), self.low_, self.high_)
        return np.asarray((Z - self.mean_) / self.scale_, dtype=float)


def _linear_model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(LinearInputs(), LogisticRegression(C=c, max_iter=2_000))


class _EarlyStopping:
    """A GradientBoostingClassifier monitor: ROC AUC on the validation rows after every stage (stage 0:
    the logistic regression alone); stops ``rounds`` stages after the best."""

    def __init__(self, X: np.ndarray, y: np.ndarray, learning_rate: float, rounds: int) -> None:
        self.X, self.y, self.learning_rate, self.rounds = X, y, learning_rate, rounds
        self.raw: np.ndarray | None = None
        self.scores: list[float] = []

    def _score(self, raw: np.ndarray) -> None:
        from sklearn.metrics import roc_auc_score

        self.scores.append(float(roc_auc_score(self.y, raw)))

    def __call__(self, i: int, booster: Any, _locals: Any) -> bool:
        if self.raw is None:
            eps = np.finfo(np.float64).eps
            p = np.clip(booster.init_.predict_proba(self.X)[:, 1], eps, 1 - eps)
            self.raw = np.log(p / (1 - p))
            self._score(self.raw)
        self.raw = self.raw + self.learning_rate * booster.estimators_[i, 0].predict(self.X)
        self._score(self.raw)
        return len(self.scores) - 1 - int(np.argmax(self.scores)) >= self.rounds


def _can_validate(y_fit: np.ndarray, y_val: np.ndarray) -> bool:
    return all(min(np.sum(part == 0), np.sum(part == 1)) >= 5 for part in (y_fit, y_val))


@pickled_as(LEAD_SCORING)
class LinearBoostedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A regularised logistic regression, then gradient-boosted trees fitted on what it misses.

    Rows must come oldest first. Trees are fitted on the older rows while the newest
    ``validation_share`` measure ROC AUC after each one (stage 0: the logistic regression alone); the
    best count (the first best: fewer trees on a tie) is then refitted on all rows. With too few leads
    of an outcome to validate: the logistic regression alone. The linear start extrapolates trends
    the trees cannot (e.g. a market indicator drifting beyond its training range).

    Probabilities are the model's own (logistic loss, few trees): no calibrator is fitted afterwards.
    A calibrator fitted on the newest leads maps raw scores seen there to rates seen there; under
    drift the final model's scores fall outside that range (isotonic flattens them, a sigmoid fitted
    to an out-of-range period can even reverse the ranking), and on stable data it changed nothing.
    """

    def __init__(
        self,
        learning_rate: float = 0.06,
        max_iter: int = 300,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        subsample: float = 0.8,
        linear_c: float = 1.0,
        validation_share: float = 0.2,
        early_stopping_rounds: int = 50,
        random_state: int = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.linear_c = linear_c
        self.validation_share = validation_share
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state

    def _booster(self, stages: int) -> Any:
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(
            init=_linear_model(self.linear_c),
            n_estimators=stages,
            learning_rate=self.learning_rate,
            max_depth=None,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            subsample=self.subsample,
            random_state=self.random_state,
        )

    def fit(self, X: Any, y: Any) -> LinearBoostedClassifier:
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=int)
        self.classes_ = np.array([0, 1])
        cut = round(len(y) * (1 - self.validation_share))
        self.validation_rows_ = len(y) - cut
        self.validation_auc_: float | None = None
        stages = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # incl. lbfgs convergence warnings
            if self.max_iter > 0 and _can_validate(y[:cut], y[cut:]):
                monitor = _EarlyStopping(X[cut:], y[cut:], self.learning_rate, self.early_stopping_rounds)
                self._booster(self.max_iter).fit(X[:cut], y[:cut], monitor=monitor)
                stages = int(np.argmax(monitor.scores))  # the first best: fewer trees on a tie
                self.validation_auc_ = monitor.scores[stages]
            # else too few leads of an outcome to validate: the logistic regression alone
            self.n_trees_ = stages
            self.model_ = (
                self._booster(stages).fit(X, y) if stages else _linear_model(self.linear_c).fit(X, y)
            )
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.decision_function(np.asarray(X, dtype=float)), dtype=float).reshape(-1)

    def predict_proba(self, X: Any) -> np.ndarray:
        from scipy.special import expit

        p = np.asarray(expit(self.decision_function(X)), dtype=float)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def describe(self) -> str:
        if self.validation_auc_ is None:
            if self.max_iter <= 0:
                return "logistic regression alone (max_iter=0: no trees)"
            return "too few leads of each outcome for a validation split: logistic regression alone"
        return (
            f"logistic regression + {self.n_trees_} boosted trees (chosen by ROC AUC "
            f"{self.validation_auc_:.3f} on the newest {self.validation_rows_:,} training leads)"
        )


@pickled_as(LEAD_SCORING)
class TextSignal(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Description text -> out-of-fold conversion log-odds from TF-IDF + logistic regression.

    ``fit_transform`` returns cross-fitted scores (no target leak into the classifier); ``transform``
    uses the model fitted on all rows.
    """

    def __init__(self, max_features: int = 2_000, folds: int = 5, random_state: int = 0) -> None:
        self.max_features = max_features
        self.folds = folds
        self.random_state = random_state

    def _pipeline(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=self.max_features, sublinear_tf=True),
            LogisticRegression(C=2.0, max_iter=500),
        )

    @staticmethod
    def _texts(frame: pd.DataFrame) -> list[str]:
        return [str(v) if isinstance(v, str) else "" for v in frame["description"]]

    def fit(self, frame: pd.DataFrame, y: Any = None) -> TextSignal:
        self.model_ = self._pipeline().fit(self._texts(frame), y)
        return self

    def fit_transform(self, frame: pd.DataFrame, y: Any = None) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        texts = self._texts(frame)
        folds = StratifiedKFold(self.folds, shuffle=True, random_state=self.random_state)
        oof = cross_val_predict(self._pipeline(), texts, y, cv=folds, method="decision_function")
        self.fit(frame, y)
        return np.asarray(oof, dtype=float).reshape(-1, 1)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model_.decision_function(self._texts(frame)), dtype=float).reshape(-1, 1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(["text_signal"], dtype=object)
