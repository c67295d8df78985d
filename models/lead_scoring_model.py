"""The lead scoring family's public API: ``train``, ``predict``, the scorers, ``compile_scorer``, ...

The code lives in the ``lead_scoring`` package (its docstring describes the three scorers and where
each part is); this module re-exports the family's public names. It is also the import path
registered models were saved under: a version's joblib artifact names
``neuracrm_mlops.models.lead_scoring_model.LeadScoringModel`` (with ``FeatureSpec``,
``LeadModelConfig``, ``LinearBoostedClassifier``, ``LinearInputs``, ``TextSignal`` inside it), or
``.RuleScorer`` / ``.BaseRateScorer``, and those classes keep pickling under this path
(``models/pickling.py``). Keep exporting them here.
"""

from __future__ import annotations

from neuracrm_mlops.models.lead_scoring.classifier import (
    LeadModelConfig,
    LinearBoostedClassifier,
    LinearInputs,
    TextSignal,
)
from neuracrm_mlops.models.lead_scoring.factors import (
    GROUP_LABELS,
    Factor,
    no_data_text,
    phrase_factor,
    rank_factors,
    top_factors,
)
from neuracrm_mlops.models.lead_scoring.features import FeatureSpec
from neuracrm_mlops.models.lead_scoring.fields import (
    ATTRIBUTE_PREFIX,
    CATEGORICAL_COLUMNS,
    FACTOR_GROUPS,
    INPUT_COLUMNS,
    MISSING_CATEGORY,
    NUMERIC_COLUMNS,
    OTHER_FIELDS,
    TEXT_COLUMNS,
    leads_frame,
    records,
    seniority_of,
    to_category,
    to_number,
    to_text,
)
from neuracrm_mlops.models.lead_scoring.lean import (
    SELF_CHECK_TOLERANCE,
    LeanLeadScorer,
    LeanScorerError,
    check_lean_scorer,
    compile_scorer,
    self_check_records,
)
from neuracrm_mlops.models.lead_scoring.model import LeadScoringModel, Scorer, occlusion_factors, train
from neuracrm_mlops.models.lead_scoring.rules import (
    BUYING_CUES,
    DISINTEREST_CUES,
    FALLBACK_MIN_AUC,
    RULE_WEIGHTS,
    BaseRateScorer,
    RuleScorer,
    choose_fallback,
    fit_fallback,
    rule_factor_scores,
)
from neuracrm_mlops.models.lead_scoring.scoring import TIERS, predict, tier_of

__all__ = [
    "ATTRIBUTE_PREFIX",
    "BUYING_CUES",
    "CATEGORICAL_COLUMNS",
    "DISINTEREST_CUES",
    "FACTOR_GROUPS",
    "FALLBACK_MIN_AUC",
    "GROUP_LABELS",
    "INPUT_COLUMNS",
    "MISSING_CATEGORY",
    "NUMERIC_COLUMNS",
    "OTHER_FIELDS",
    "RULE_WEIGHTS",
    "SELF_CHECK_TOLERANCE",
    "TEXT_COLUMNS",
    "TIERS",
    "BaseRateScorer",
    "Factor",
    "FeatureSpec",
    "LeadModelConfig",
    "LeadScoringModel",
    "LeanLeadScorer",
    "LeanScorerError",
    "LinearBoostedClassifier",
    "LinearInputs",
    "RuleScorer",
    "Scorer",
    "TextSignal",
    "check_lean_scorer",
    "choose_fallback",
    "compile_scorer",
    "fit_fallback",
    "leads_frame",
    "no_data_text",
    "occlusion_factors",
    "phrase_factor",
    "predict",
    "rank_factors",
    "records",
    "rule_factor_scores",
    "self_check_records",
    "seniority_of",
    "tier_of",
    "to_category",
    "to_number",
    "to_text",
    "top_factors",
    "train",
]
