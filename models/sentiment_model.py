"""Sentiment of customer interaction text: negative, neutral or positive, with a score.

- ``VaderScorer``: the VADER lexicon baseline (the ``vadersentiment`` package ships the lexicon);
  no training, always available, and the fallback.
- ``SentimentClassifier`` (``train``): a linear SVM on three views of the text, trained once enough
  labelled interactions exist (``SentimentConfig.min_labelled``):

  * word uni- and bigrams (TF-IDF, sublinear tf), lower-cased, digits folded to ``0``, and words after
    a negation ("not", "never", "n't", "without", ...) up to the end of the clause marked ``_not``, so
    that "not happy" and "happy" are different features;
  * character 3-5-grams inside word boundaries (TF-IDF): spelling variants, inflections, compounds
    and typos of customer text share features;
  * VADER's lexicon scores (negative, neutral, positive share and compound), a general-English prior
    for words the training data has seen rarely or never.

  The regularisation ``C`` is chosen from ``SentimentConfig.c_grid`` by stratified cross-validation on
  the training texts only; the same out-of-fold decision values fit a softmax temperature, so
  ``score`` is a calibrated probability of the predicted label (the label is the SVM's own choice).
- ``TfidfSentimentModel``: the earlier TF-IDF + logistic regression model; ``train`` no longer
  builds it, and the class stays so that versions registered with it still load and serve.

``predict(model, texts)`` returns one dict per text with ``label`` and ``score`` (the probability,
0..1, of that label; for VADER its confidence); the trained models add ``probabilities`` per label.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LABELS = ("negative", "neutral", "positive")
MAX_TEXT_CHARS = 5_000

# words that reverse what follows them up to the end of the clause (VADER's list, trimmed to what
# carries a negation in customer text, plus apostrophe-less spellings); any token ending in n't too
NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "nowhere",
        "neither",
        "nor",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "couldnt",
        "shouldnt",
        "hasnt",
        "havent",
        "hadnt",
        "aint",
        "rarely",
        "seldom",
        "hardly",
        "barely",
    }
)
# a negation's scope ends at clause punctuation or at a contrast ("..., but ...")
CLAUSE_ENDS = frozenset({".", ",", ";", ":", "!", "?", "but", "however", "although", "though"})
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
_TOKENS = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.,;:!?]")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class SentimentConfig:
    min_labelled: int = 300  # fewer labelled interactions: keep the VADER baseline
    min_per_class: int = 20
    ngram_max: int = 2  # word n-grams 1..ngram_max
    min_df: int = 2  # a word or character n-gram must occur in this many training texts
    # fixed SVM regularisation; None chooses it from c_grid by cross-validation on the training texts
    c: float | None = None
    vader_threshold: float = 0.05
    c_grid: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    cv_folds: int = 3
    char_ngrams: tuple[int, int] | None = (3, 5)  # character n-grams inside word boundaries; None: off
    max_features: int = 200_000  # per vocabulary, bounds memory on large exports
    negation_marking: bool = True
    vader_features: bool = True
    vader_weight: float = 1.0  # scale of the VADER features next to the unit-length TF-IDF rows
    class_weight: str | None = None  # "balanced": weigh classes inversely to their frequency
    seed: int = 0  # fold assignment of the cross-validation

    def as_params(self) -> dict[str, Any]:
        return dict(self.__dict__)


@functools.cache
def _vader_analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def clean_text(text: Any) -> str:
    """Any input as text the models take: None / NaN become empty, the rest ``str``, clipped."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return (text if isinstance(text, str) else str(text))[:MAX_TEXT_CHARS]


def normalize_text(text: str) -> str:
    """Lower case, typographic apostrophes straightened, every number one token ``0``, spaces collapsed."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _SPACES.sub(" ", _DIGITS.sub("0", text)).strip()


def negation_marked(text: str) -> str:
    """Words of ``text`` (normalized), those inside a negation's scope suffixed ``_not``."""
    out: list[str] = []
    negated = False
    for token in _TOKENS.findall(normalize_text(text)):
        if token in CLAUSE_ENDS:
            negated = False
            if token[0].isalpha():
                out.append(token)
            continue
        out.append(token + "_not" if negated else token)
        if token in NEGATORS or token.endswith("n't"):
            negated = True
    return " ".join(out)


def plain_words(text: str) -> str:
    """Words of ``text`` (normalized), without negation marks."""
    return " ".join(t for t in _TOKENS.findall(normalize_text(text)) if t[0].isalnum())


def vader_features(texts: Sequence[str]) -> np.ndarray:
    """VADER's negative, neutral and positive shares and compound score, one row per text."""
    analyzer = _vader_analyzer()
    rows = [analyzer.polarity_scores(t) for t in texts]
    return np.array([[r["neg"], r["neu"], r["pos"], r["compound"]] for r in rows], dtype=float).reshape(
        len(rows), 4
    )


class VaderScorer:
    """VADER's compound score: >= t positive, <= -t negative, else neutral."""

    kind = "vader"

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self._analyzer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "_analyzer": None}

    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        if self._analyzer is None:
            self._analyzer = _vader_analyzer()
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=float)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for compound in self._scores([clean_text(t) for t in texts]):
            label = (
                "positive"
                if compound >= self.threshold
                else "negative"
                if compound <= -self.threshold
                else "neutral"
            )
            # score: confidence in the label, 0..1
            score = abs(compound) if label != "neutral" else 1 - abs(compound) / self.threshold / 2
            out.append(
                {
                    "label": label,
                    "score": round(float(min(1.0, max(0.0, score))), 4),
                    "compound": float(compound),
                }
            )
        return out


def _results(classes: Sequence[str], probabilities: np.ndarray, best: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for row, k in zip(probabilities, best, strict=True):
        out.append(
            {
                "label": classes[int(k)],
                "score": round(float(row[int(k)]), 4),
                "probabilities": {c: round(float(p), 4) for c, p in zip(classes, row, strict=True)},
            }
        )
    return out


@dataclass
class SentimentClassifier:
    """Word + character TF-IDF and VADER features, a linear SVM, softmax-calibrated scores."""

    word_vectorizer: Any
    char_vectorizer: Any  # None when character n-grams are off
    svm: Any
    temperature: float
    config: SentimentConfig
    classes: tuple[str, ...]
    selection: dict[str, Any] = field(default_factory=dict)  # chosen C and cross-validated accuracy
    kind: str = "tfidf_vader_svm"
    _lean: _LeanScorer | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lean": None}  # rebuilt on first use after loading

    def features(self, texts: Sequence[str]) -> Any:
        """The feature matrix the SVM was fitted on (scikit-learn's path, for batches and checks)."""
        return _features(
            [clean_text(t) for t in texts], self.word_vectorizer, self.char_vectorizer, self.config
        )

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """SVM decision values, one row per text and one column per class in ``classes``."""
        if self._lean is None:
            self._lean = _LeanScorer(self)
        return self._lean.decision([clean_text(t) for t in texts])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.decision(texts) / self.temperature)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        if not len(texts):
            return []
        decision = self.decision(texts)
        probabilities = softmax(decision / self.temperature)
        return _results(self.classes, probabilities, np.argmax(decision, axis=1))


class _LeanScorer:
    """The fitted model's arithmetic without scikit-learn's per-call validation: the same TF-IDF
    weighting and SVM decision values, computed text by text (a single text in well under 1 ms)."""

    def __init__(self, model: SentimentClassifier) -> None:
        coef = np.asarray(model.svm.coef_, dtype=float)
        self.intercept = np.asarray(model.svm.intercept_, dtype=float)
        self.blocks: list[tuple[Any, dict[str, int], np.ndarray, np.ndarray, bool]] = []
        offset = 0
        for vectorizer in (model.word_vectorizer, model.char_vectorizer):
            if vectorizer is None:
                continue
            if vectorizer.norm != "l2" or not vectorizer.use_idf:
                raise ValueError("the lean scorer expects l2-normalised TF-IDF rows")
            size = len(vectorizer.vocabulary_)
            self.blocks.append(
                (
                    vectorizer.build_analyzer(),
                    vectorizer.vocabulary_,
                    np.asarray(vectorizer.idf_, dtype=float),
                    np.ascontiguousarray(coef[:, offset : offset + size].T),
                    bool(vectorizer.sublinear_tf),
                )
            )
            offset += size
        self.vader: np.ndarray | None = None
        if model.config.vader_features:
            self.vader = np.ascontiguousarray(coef[:, offset : offset + 4].T) * model.config.vader_weight
            offset += 4
        if offset != coef.shape[1]:
            raise ValueError(f"the SVM has {coef.shape[1]} weights per class, the features {offset}")

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        out = np.tile(self.intercept, (len(texts), 1))
        for analyze, vocabulary, idf, weights, sublinear in self.blocks:
            for row, text in enumerate(texts):
                counts: dict[int, int] = {}
                for term in analyze(text):
                    j = vocabulary.get(term)
                    if j is not None:
                        counts[j] = counts.get(j, 0) + 1
                if not counts:
                    continue
                index = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=float, count=len(counts))
                values = (1.0 + np.log(tf) if sublinear else tf) * idf[index]
                out[row] += (values / np.sqrt(values @ values)) @ weights[index]
        if self.vader is not None and len(texts):
            out += vader_features(texts) @ self.vader
        return _decision_matrix(out if out.shape[1] > 1 else out[:, 0])


@dataclass
class TfidfSentimentModel:
    """The earlier model (TF-IDF words and bigrams + logistic regression), kept for registered versions."""

    pipeline: Any
    config: SentimentConfig
    kind: str = "tfidf_logreg"

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        if not len(texts):
            return []
        probabilities = self.pipeline.predict_proba([clean_text(t) for t in texts])
        return _results(list(self.pipeline.classes_), probabilities, np.argmax(probabilities, axis=1))


def enough_labels(labels: Sequence[str | None], config: SentimentConfig) -> tuple[bool, str]:
    """Whether a classifier can be trained; the reason when not."""
    known = [label for label in labels if label in LABELS]
    if len(known) < config.min_labelled:
        return False, f"{len(known)} labelled interactions, fewer than the {config.min_labelled} needed"
    counts = {label: known.count(label) for label in LABELS}
    thin = [label for label, count in counts.items() if count < config.min_per_class]
    if thin:
        return False, f"too few examples of {', '.join(thin)} (need {config.min_per_class} each)"
    return True, f"{len(known)} labelled interactions"


def softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def _decision_matrix(decision: np.ndarray) -> np.ndarray:
    """One column per class (a two-class SVM returns one signed column)."""
    decision = np.asarray(decision, dtype=float)
    if decision.ndim == 1:
        return np.column_stack([-decision / 2, decision / 2])
    return decision


def _vectorizers(config: SentimentConfig, n_texts: int) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # min_df cannot exceed the number of texts (tiny corpora in tests and first imports)
    min_df = max(1, min(config.min_df, n_texts // 2))
    words = TfidfVectorizer(
        preprocessor=negation_marked if config.negation_marking else plain_words,
        token_pattern=r"\S+",
        lowercase=False,
        ngram_range=(1, config.ngram_max),
        min_df=min_df,
        max_features=config.max_features,
        sublinear_tf=True,
        dtype=np.float64,
    )
    chars = (
        TfidfVectorizer(
            analyzer="char_wb",
            preprocessor=normalize_text,
            lowercase=False,
            ngram_range=config.char_ngrams,
            min_df=min_df,
            max_features=config.max_features,
            sublinear_tf=True,
            dtype=np.float64,
        )
        if config.char_ngrams
        else None
    )
    return words, chars


def _features(
    texts: Sequence[str], words: Any, chars: Any, config: SentimentConfig, *, fit: bool = False
) -> Any:
    """The feature rows of ``texts``; ``fit``: learn the vocabularies and IDF weights from them first."""
    import scipy.sparse as sp

    blocks = [words.fit_transform(texts) if fit else words.transform(texts)]
    if chars is not None:
        blocks.append(chars.fit_transform(texts) if fit else chars.transform(texts))
    if config.vader_features:
        blocks.append(sp.csr_matrix(vader_features(texts) * config.vader_weight))
    return sp.hstack(blocks, format="csr")


def _svm(c: float, config: SentimentConfig) -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(C=c, class_weight=config.class_weight, max_iter=10_000, random_state=config.seed)


def _select_c(
    x: Any, y: np.ndarray, config: SentimentConfig
) -> tuple[float, np.ndarray | None, dict[str, Any]]:
    """The C with the best out-of-fold accuracy on the training texts (ties: the smaller C) and its
    out-of-fold decision values (None when a class is too thin to cross-validate)."""
    from sklearn.model_selection import StratifiedKFold

    grid = sorted({float(c) for c in ((config.c,) if config.c is not None else config.c_grid)})
    if not grid or grid[0] <= 0:
        raise ValueError(f"the SVM's C must be positive, got {grid[0] if grid else 'an empty c_grid'}")
    classes, counts = np.unique(y, return_counts=True)
    folds = min(config.cv_folds, int(counts.min()))
    if folds < 2:
        middle = grid[len(grid) // 2]
        return middle, None, {"chosen_c": middle, "cv_folds": 0}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    splits = list(splitter.split(np.zeros(len(y)), y))
    best: tuple[float, float, np.ndarray] | None = None
    accuracy: dict[str, float] = {}
    for c in grid:
        oof = np.zeros((len(y), len(classes)))
        for fit_rows, check_rows in splits:
            model = _svm(c, config).fit(x[fit_rows], y[fit_rows])
            oof[check_rows] = _decision_matrix(model.decision_function(x[check_rows]))
        accuracy[f"{c:g}"] = float(np.mean(classes[np.argmax(oof, axis=1)] == y))
        if best is None or accuracy[f"{c:g}"] > best[1]:
            best = (c, accuracy[f"{c:g}"], oof)
    assert best is not None
    return best[0], best[2], {"chosen_c": best[0], "cv_folds": folds, "cv_accuracy": accuracy}


def _fit_temperature(decision: np.ndarray | None, y: np.ndarray) -> float:
    """The softmax temperature that minimises the log loss of out-of-fold decision values."""
    if decision is None:
        return 1.0
    from scipy.optimize import minimize_scalar

    classes = np.unique(y)
    truth = np.searchsorted(classes, y)

    def log_loss(log_t: float) -> float:
        p = softmax(decision / math.exp(log_t))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), truth], 1e-12, 1.0))))

    found = minimize_scalar(log_loss, bounds=(math.log(0.01), math.log(100.0)), method="bounded")
    return float(math.exp(found.x))


def train(
    texts: Sequence[str], labels: Sequence[str], config: SentimentConfig | None = None
) -> SentimentClassifier:
    """Fit the classifier on labelled texts (rows whose label is not one of ``LABELS`` are left out).

    Raises ``ValueError`` when ``enough_labels`` says no, or fewer than two labels occur."""
    config = config or SentimentConfig()
    ok, reason = enough_labels(labels, config)
    if not ok:
        raise ValueError(f"cannot train a sentiment classifier: {reason}")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    rows = [(clean_text(t), str(label)) for t, label in zip(texts, labels, strict=True) if label in LABELS]
    y = np.array([label for _, label in rows])
    classes = tuple(str(c) for c in np.unique(y))
    if len(classes) < 2:
        raise ValueError(f"cannot train a sentiment classifier: it needs two labels, the data has {classes}")
    clean = [t for t, _ in rows]
    words, chars = _vectorizers(config, len(clean))
    x = _features(clean, words, chars, config, fit=True)
    c, oof, selection = _select_c(x, y, config)
    svm = _svm(c, config).fit(x, y)
    temperature = _fit_temperature(oof, y)
    selection = {**selection, "temperature": temperature, "n_features": int(x.shape[1])}
    return SentimentClassifier(words, chars, svm, temperature, config, classes, selection)


def predict(
    model: SentimentClassifier | TfidfSentimentModel | VaderScorer, texts: Sequence[str]
) -> list[dict[str, Any]]:
    return model.predict([clean_text(t) for t in texts])
