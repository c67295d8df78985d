"""The trained lead model (``LeadScoringModel``): ``train``, and its factors by occlusion.

Factors are explained per lead by occlusion: each factor group the model has inputs for is set to the
training population's typical value, and the change in probability is that group's contribution. A
model pickled before the schema-driven features still loads and scores with its original
featurization (``legacy``; the ``_legacy_*`` functions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..pickling import LEAD_SCORING, pickled_as
from .classifier import LeadModelConfig, LinearBoostedClassifier, TextSignal
from .factors import Factor, rank_factors
from .features import (
    _LOG_COLUMNS,
    _RATIO,
    FeatureSpec,
    _canonical_frame,
    _mode,
    _model_frame,
    _select_features,
    _type_attributes,
)
from .fields import (
    ATTRIBUTE_PREFIX,
    CATEGORICAL_COLUMNS,
    FACTOR_GROUPS,
    NUMERIC_COLUMNS,
    OTHER_FIELDS,
    _as_frame,
    leads_frame,
    records,
    seniority_of,
)
from .rules import RULE_WEIGHTS, BaseRateScorer, RuleScorer
from .scoring import predict


@pickled_as(LEAD_SCORING)
@dataclass
class LeadScoringModel:
    """A fitted lead model plus what it needs to explain itself. Picklable."""

    pipeline: Any
    attribute_numeric: list[str]
    attribute_categorical: list[str]
    reference: dict[str, Any]  # the typical lead (a lead record): numeric medians, most common values
    config: LeadModelConfig
    feature_schema: dict[str, str]  # input column -> kind, for semantic versioning and drift
    kind: str = "model"
    feature_notes: list[str] = field(default_factory=list)  # what training decided about each field
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    reference_features: dict[str, Any] = field(default_factory=dict)  # the reference lead, model frame
    # a model pickled before the schema-driven features (no ``spec``): scored by its original
    # featurization (``_legacy_*``), served by the pandas path
    legacy: ClassVar[bool] = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "spec" not in state:
            self.__dict__.update(
                feature_notes=[
                    "trained before schema-driven features: scored with its original featurization"
                ],
                spec=FeatureSpec(),
                reference_features={},
                legacy=True,
            )

    @property
    def factor_inputs(self) -> dict[str, list[str]]:
        """The model-frame columns of every factor group (empty: the group has no inputs)."""
        return {g: list(self.spec.groups.get(g, ())) for g in FACTOR_GROUPS}

    def _frames(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
        canonical = _canonical_frame(leads, self.spec.attr_numeric, self.spec.attr_categorical)
        return canonical, _model_frame(canonical, self.spec)

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.legacy:
            return _legacy_proba(self, leads)
        _, frame = self._frames(leads)
        if len(frame) == 0:
            return np.zeros(0)
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=float)

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        if self.legacy:
            return _legacy_explain(self, leads, top)
        canonical, frame = self._frames(leads)
        n = len(frame)
        if n == 0:
            return []
        variants = [frame]
        for _, columns in self.spec.variants():
            masked = frame.copy()
            for column in columns:
                value = self.reference_features[column]
                masked[column] = pd.Series([value] * n, index=frame.index, dtype=frame[column].dtype)
            variants.append(masked)
        stacked = pd.concat(variants, ignore_index=True)
        probabilities = self.pipeline.predict_proba(stacked)[:, 1].reshape(len(variants), n)
        return occlusion_factors(self.spec, probabilities, records(canonical), top)

    def predict(
        self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], explain: bool = True
    ) -> list[dict[str, Any]]:
        return predict(self, leads, explain=explain)


def _legacy_design(
    model: LeadScoringModel, leads: pd.DataFrame | Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """The featurization of models pickled before schema-driven features (their pipelines expect it)."""
    frame = leads_frame(leads).reset_index(drop=True)
    for column in (*model.attribute_numeric, *model.attribute_categorical):
        if column not in frame.columns:
            frame[column] = None
    for column in model.attribute_numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in model.attribute_categorical:
        frame[column] = pd.Series(
            [np.nan if v is None or pd.isna(v) else str(v) for v in frame[column]],
            index=frame.index,
            dtype=object,
        )
    return frame


def _legacy_engineered(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["seniority"] = [seniority_of(s, t) for s, t in zip(out["seniority"], out["job_title"], strict=True)]
    for column in _LOG_COLUMNS:
        out[column] = np.log1p(pd.to_numeric(out[column], errors="coerce").astype(float).clip(lower=0))
    visits = out["website_visits"]
    out["pages_per_visit"] = out["pages_viewed"] / visits.where(visits > 0)
    return out


def _legacy_proba(model: LeadScoringModel, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
    frame = _legacy_design(model, leads)
    if len(frame) == 0:
        return np.zeros(0)
    return np.asarray(model.pipeline.predict_proba(_legacy_engineered(frame))[:, 1], dtype=float)


def _legacy_explain(
    model: LeadScoringModel, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int
) -> list[list[Factor]]:
    """The six groups occluded as before, except that a column without a typical value (no values in
    training) is left as it is instead of failing; a group with none of those has no inputs."""
    frame = _legacy_design(model, leads)
    n = len(frame)
    if n == 0:
        return []
    groups = [g for g in RULE_WEIGHTS if any(model.reference.get(c) is not None for c in FACTOR_GROUPS[g])]
    variants = [frame]
    for group in groups:
        masked = frame.copy()
        for column in FACTOR_GROUPS[group]:
            value = model.reference.get(column)
            if value is not None:
                masked[column] = pd.Series([value] * n, index=frame.index, dtype=object).infer_objects()
        variants.append(masked)
    stacked = pd.concat(variants, ignore_index=True)
    probabilities = model.pipeline.predict_proba(_legacy_engineered(stacked))[:, 1].reshape(len(variants), n)
    without = tuple(g for g in FACTOR_GROUPS if g not in groups)
    return [
        rank_factors(
            {g: float(probabilities[0][i] - probabilities[k][i]) for k, g in enumerate(groups, start=1)},
            row,
            top,
            without_inputs=without,
        )
        for i, row in enumerate(records(frame))
    ]


def occlusion_factors(
    spec: FeatureSpec, probabilities: np.ndarray, rows: Sequence[Mapping[str, Any]], top: int = 3
) -> list[list[Factor]]:
    """Top factors per lead from occlusion probabilities, shape ``(1 + len(spec.variants()), len(rows))``:
    row 0 is each lead as it is, the others each lead with one variant's columns at the reference."""
    base = probabilities[0]
    variants = spec.variants()
    without = spec.groups_without_inputs
    out = []
    for i, row in enumerate(rows):
        impacts: dict[str, float] = {}
        fields: dict[str, float] = {}
        for k, (name, _) in enumerate(variants, start=1):
            impact = float(base[i] - probabilities[k][i])
            (fields if name.startswith(ATTRIBUTE_PREFIX) else impacts)[name] = impact
        custom_field = None
        if OTHER_FIELDS in impacts:
            if not fields:
                custom_field = spec.groups[OTHER_FIELDS][0]
            else:
                sign = math.copysign(1.0, impacts[OTHER_FIELDS])
                same = {c: v for c, v in fields.items() if v * sign > 0}
                pool = same or fields
                custom_field = max(pool, key=lambda c: abs(pool[c]))  # first of equal ones (spec order)
        out.append(rank_factors(impacts, row, top, without_inputs=without, custom_field=custom_field))
    return out


def _time_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions oldest first (by ``created_at`` when the leads have it, else as given)."""
    if "created_at" not in frame.columns:
        return np.arange(len(frame))
    created = pd.to_datetime(frame["created_at"], utc=True, errors="coerce", format="mixed")
    return np.asarray(created.reset_index(drop=True).sort_values(kind="stable", na_position="last").index)


def train(
    leads: pd.DataFrame, labels: Sequence[bool] | np.ndarray, config: LeadModelConfig | None = None
) -> LeadScoringModel:
    """Fit the model on leads with known outcomes, from whatever fields those leads have."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    config = config or LeadModelConfig()
    y = np.asarray(labels, dtype=int)
    if len(y) != len(leads):
        raise ValueError(f"{len(leads)} leads but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("training needs both converted and not-converted leads")
    frame = _as_frame(leads).reset_index(drop=True)
    order = _time_order(frame)
    frame, y = frame.iloc[order].reset_index(drop=True), y[order]

    attr_numeric, attr_categorical, notes = _type_attributes(frame, config)
    canonical = _canonical_frame(frame, attr_numeric, attr_categorical)
    spec, selection_notes = _select_features(canonical, attr_numeric, attr_categorical, y, config)
    notes.extend(selection_notes)
    if not spec.numeric and not spec.categorical and not spec.text:
        raise ValueError(
            "no usable lead field: every field is missing, constant or an identifier in the training "
            "leads (" + "; ".join(notes) + ")"
        )

    transformers: list[tuple[str, Any, list[str]]] = []
    if spec.numeric:
        transformers.append(
            ("numeric", SimpleImputer(strategy="median", add_indicator=True), list(spec.numeric))
        )
    if spec.categorical:
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=config.min_category_leads,
            max_categories=config.max_categories,
            sparse_output=False,
        )
        transformers.append(("categorical", encoder, list(spec.categorical)))
    if spec.text:
        transformers.append(
            ("text", TextSignal(config.text_max_features, random_state=config.random_state), ["description"])
        )
    classifier = LinearBoostedClassifier(
        learning_rate=config.learning_rate,
        max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf,
        subsample=config.subsample,
        linear_c=config.linear_c,
        validation_share=config.validation_share,
        early_stopping_rounds=config.early_stopping_rounds,
        random_state=config.random_state,
    )
    pipeline = Pipeline([("features", ColumnTransformer(transformers)), ("model", classifier)])
    pipeline.fit(_model_frame(canonical, spec), y)
    notes.append(f"classifier: {classifier.describe()}")

    reference: dict[str, Any] = {}
    for column in (*NUMERIC_COLUMNS, *spec.attr_numeric):
        values = canonical[column].to_numpy(dtype=float)
        present = values[~np.isnan(values)]
        reference[column] = float(np.median(present)) if len(present) else None
    for column in (*CATEGORICAL_COLUMNS, "job_title", *spec.attr_categorical):
        reference[column] = _mode(list(canonical[column]))
    reference["description"] = ""
    reference_canonical = _canonical_frame([reference], spec.attr_numeric, spec.attr_categorical)
    reference_features = records(_model_frame(reference_canonical, spec))[0]

    schema = dict.fromkeys((c for c in spec.numeric if c != _RATIO), "numeric")
    schema |= dict.fromkeys(spec.categorical, "categorical")
    if spec.text:
        schema["description"] = "text"
    return LeadScoringModel(
        pipeline=pipeline,
        attribute_numeric=list(spec.attr_numeric),
        attribute_categorical=list(spec.attr_categorical),
        reference=reference,
        config=config,
        feature_schema=schema,
        feature_notes=notes,
        spec=spec,
        reference_features=reference_features,
    )


Scorer = LeadScoringModel | RuleScorer | BaseRateScorer
