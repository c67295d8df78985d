"""Lead scoring: the probability that a lead converts, a 0-100 score, a tier and the top-3 factors.

Import it from ``neuracrm_mlops.models.lead_scoring_model``: that module is the family's public API and
the import path registered models pickle its classes under (see ``models/pickling.py``). Here:

- ``fields``: the lead fields and how every path reads their values (``leads_frame``, ``to_number``,
  ``to_category``, ``to_text``, ``seniority_of``).
- ``factors``: ``Factor`` and the sentences that explain a factor group for one lead.
- ``scoring``: the output every scorer shares (``predict``, ``tier_of``).
- ``rules``: the rule scorer, the base rate and the choice of fallback (``fit_fallback``).
- ``classifier``: ``LeadModelConfig`` and the estimators of the trained model's pipeline
  (``LinearBoostedClassifier``, ``LinearInputs``, ``TextSignal``).
- ``features``: which fields become features (``FeatureSpec``) and the frames the pipeline reads.
- ``model``: the trained ``LeadScoringModel``, its occlusion factors and ``train``.
- ``lean``: the lean prediction path for serving (``compile_scorer``, ``LeanLeadScorer``).

Three scorers share one output shape:
- ``LeadScoringModel`` (``train``): built from the fields the training leads actually have. Every
  documented lead field is optional and custom fields (``attributes``, or ``attr_*`` columns) are
  typed from their values; a field without values, an identifier-like or free-text field and a
  constant one are dropped, a categorical field with many values is bucketed (its most frequent
  values, the rest grouped as other), and the text signal is built only when there is enough text.
  Every such decision is a sentence in ``model.feature_notes``. The classifier is a regularised
  logistic regression followed by gradient-boosted trees fitted on what it misses; the number of
  trees is chosen on the newest training leads (time-ordered validation, zero trees allowed;
  ``LinearBoostedClassifier``).
- ``RuleScorer``: the six-factor rule scorer. ``RuleScorer()`` uses the hand weights (industry 20,
  company size 15, engagement 25, decision maker 15, urgency 10, text insights 5, normalised) and
  needs no training; ``RuleScorer.fit(leads, y)`` calibrates it on an organization's leads (the six
  factor scores feed a small logistic regression: weights and base rate come from the data, groups
  without inputs get no weight).
- ``BaseRateScorer``: the training base rate for every lead. ``fit_fallback`` picks the fallback:
  the fitted rules when their holdout ROC AUC is at least ``FALLBACK_MIN_AUC``, else the base rate.

Factors are explained per lead by occlusion: each factor group the model has inputs for is set to the
training population's typical value, and the change in probability is that group's contribution. The
groups are the six design groups plus ``other_fields`` (the custom fields; its sentence names the
custom field that moves this lead's probability most). **Groups without inputs** (no such field in
the training leads) rank after every group with inputs: they appear in the top 3 only when fewer than
three groups have inputs, with impact 0 and a sentence that says so (e.g. "Company size: no data in
this organization's leads"); ``direction`` is then "+", as for any impact >= 0. ``source`` and
``region`` are features but belong to no group (never explained). ``model.factor_inputs`` lists the
inputs of every group.

Values are read the same way on every path (``to_number``, ``to_category``, ``to_text``): numeric text
is a number, booleans are 1 / 0 (or "true" / "false" as categories), 5 and 5.0 are the category "5",
blank text is missing. A model pickled before these schema-driven features still loads and scores
with its original featurization (``legacy``; served through ``predict``).

``predict(scorer, leads)`` is the reference path (pandas frames through the fitted pipeline). For the
HTTP serving layer, ``compile_scorer(scorer)`` returns a ``LeanLeadScorer`` whose ``predict(records)``
gives the same answers from plain dict records without pandas, verified against ``predict`` when built.
"""
