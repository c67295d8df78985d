"""The ``ModelFamily`` protocol: everything the platform needs to know about one model family.

A family is what the CLI, the DAG factories, rollout, monitoring and the health page dispatch on,
instead of branching on family strings:

- ``name``: the family (``lead_scoring``); the DAG ids (``train_<name>``, ``rollout_<name>``), the
  assets and the CLI arguments use it;
- ``dataset`` and ``validation_suite``: the CRM dataset it trains on (``neuracrm-mlops import DATASET``)
  and the Great Expectations suite that validates it before training (voice scenarios: their files
  in git, checked by the family's own validator);
- ``naming``: ``shared`` (one registered model for every organization, named like the family),
  ``per_organization`` (one registered model per organization, ``<model_prefix><organization id>``)
  or ``per_scenario`` (one registered *prompt* per voice scenario, ``<model_prefix><scenario>``, in
  MLflow's prompt registry);
- ``validate(run_id)`` and ``train(request)``: the check of the training input and the trainer entry
  the pipelines and the CLI call (validate first);
- ``accuracy_measure`` and ``predicted_label``: how live accuracy is measured, as the monitor does it
  (``label_match``: the share of correct labels, each output's label from ``predicted_label``;
  ``one_minus_wape``: ``max(0, 1 - WAPE)`` over the months with an actual; ``call_success``: the share
  of analysed calls that succeeded);
- ``outcome_labels`` and ``outcome_aliases``: the labels a recorded outcome may carry and the other
  spellings a CRM export uses for them (``true`` -> ``converted``); none: outcomes are values;
- ``fallback``: what answers when no model version does;
- ``rollout_strategy``: ``traffic_share`` (the canary weight is a share of requests),
  ``organization_cohort`` (a share of organizations, each judged on its own actuals) or ``call_share``
  (per scenario, a share of calls, sticky by contact, judged on call success);
- ``checks``: which monitoring checks apply, and whether the monitor runs one pass per organization;
- ``cli_train``: what ``neuracrm-mlops train`` accepts and shows for the family.

Nothing here imports training or serving code: the DAG files import the registry when Airflow parses
them, so a family's trainer imports its training module when it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

if TYPE_CHECKING:
    from neuracrm_mlops.training.train import Lineage

Naming = Literal["shared", "per_organization", "per_scenario"]
RolloutStrategy = Literal["traffic_share", "organization_cohort", "call_share"]
AccuracyMeasure = Literal["label_match", "one_minus_wape", "call_success"]
NAMINGS: tuple[Naming, ...] = get_args(Naming)
ROLLOUT_STRATEGIES: tuple[RolloutStrategy, ...] = get_args(RolloutStrategy)
ACCURACY_MEASURES: tuple[AccuracyMeasure, ...] = get_args(AccuracyMeasure)

ProgressCallback = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class TrainRequest:
    """One training run of a family: the lineage to log, and (per-organization families only) one
    organization, the worker processes and a progress callback (``None``: the trainer's defaults)."""

    lineage: Lineage
    organization: str | int | None = None
    workers: int | None = None
    progress: ProgressCallback | None = None


@dataclass(frozen=True)
class MonitoringChecks:
    """The monitor's checks that apply to a family's champions (``monitoring.monitor_model``); live
    accuracy (the 80% rule, with its automatic rollback) applies to every family."""

    drift: bool = True  # served features against the version's training reference profile
    bias: bool = True  # fairness across NEURACRM_BIAS_ATTRIBUTE
    health: bool = True  # error rate and p95 latency of the served rows
    per_organization: bool = False  # one pass per organization's champion (``monitor_forecasts``)
    # after an automatic rollback, ask for a retraining (asset ``neuracrm://monitor/<family>/retrain``);
    # False where retraining cannot help (a scenario's prompt changes only when a person edits its file)
    retrain_after_rollback: bool = True


@dataclass(frozen=True)
class CliTrain:
    """What ``neuracrm-mlops train <family>`` accepts: ``--org`` and ``--workers`` (per-organization
    families), and the unit its progress bar counts (None: no progress bar)."""

    organization_option: bool = False
    workers_option: bool = False
    progress_unit: str | None = None


@runtime_checkable
class ModelFamily(Protocol):
    """One model family; see the module docstring. ``FamilySpec`` is the implementation every
    registered family uses; any object with these members would do."""

    @property
    def name(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def validation_suite(self) -> str: ...
    @property
    def naming(self) -> Naming: ...
    @property
    def model_prefix(self) -> str: ...
    @property
    def fallback(self) -> str: ...
    @property
    def rollout_strategy(self) -> RolloutStrategy: ...
    @property
    def accuracy_measure(self) -> AccuracyMeasure: ...
    @property
    def outcome_labels(self) -> tuple[str, ...]: ...

    @property
    def outcome_aliases(self) -> Mapping[str, str]: ...

    @property
    def checks(self) -> MonitoringChecks: ...
    @property
    def cli_train(self) -> CliTrain: ...

    def registered_name(self, organization_id: int | None = None) -> str:
        """The registered model of the family (of ``organization_id``, per-organization families)."""
        ...

    def validate(self, run_id: str) -> dict[str, Any]:
        """Check the training input (a Great Expectations suite, or the family's own check); raise a
        NeuraCRMError when it must not be trained on. The summary training logs as lineage."""
        ...

    def owns(self, model_name: str) -> bool:
        """Whether ``model_name`` is a registered model of this family."""
        ...

    def train(self, request: TrainRequest) -> dict[str, Any]:
        """Train, gate and register; the outcome as a JSON-friendly dict (XCom-sized)."""
        ...

    def predicted_label(self, output: Mapping[str, Any]) -> str | None:
        """The label a logged output stands for (None when it has none, e.g. a forecast)."""
        ...


def no_label(output: Mapping[str, Any]) -> str | None:
    """``predicted_label`` of a family whose outputs have no label (forecasts)."""
    return None


@dataclass(frozen=True)
class FamilySpec:
    """A ``ModelFamily`` made of plain values and two callables (the trainer and the label reader)."""

    name: str
    dataset: str
    validation_suite: str
    naming: Naming
    fallback: str
    rollout_strategy: RolloutStrategy
    accuracy_measure: AccuracyMeasure
    trainer: Callable[[TrainRequest], dict[str, Any]]
    label_of: Callable[[Mapping[str, Any]], str | None] = no_label
    # None: the Great Expectations suite of ``dataset`` (``quality.validation``)
    validator: Callable[[str], dict[str, Any]] | None = None
    checks: MonitoringChecks = MonitoringChecks()
    cli_train: CliTrain = CliTrain()
    model_prefix: str = ""
    outcome_labels: tuple[str, ...] = ()  # none: the family's outcomes are values (forecast actuals)
    outcome_aliases: Mapping[str, str] = field(default_factory=dict)  # other spellings -> a label

    def __post_init__(self) -> None:
        if self.naming not in NAMINGS:
            raise ValueError(f"{self.name}: naming must be one of {NAMINGS}, got {self.naming!r}")
        if self.rollout_strategy not in ROLLOUT_STRATEGIES:
            raise ValueError(
                f"{self.name}: rollout_strategy must be one of {ROLLOUT_STRATEGIES}, "
                f"got {self.rollout_strategy!r}"
            )
        if self.accuracy_measure not in ACCURACY_MEASURES:
            raise ValueError(
                f"{self.name}: accuracy_measure must be one of {ACCURACY_MEASURES}, "
                f"got {self.accuracy_measure!r}"
            )
        if (self.naming != "shared") != bool(self.model_prefix):
            raise ValueError(
                f"{self.name}: a model_prefix goes with per_organization or per_scenario naming, only there"
            )

    def registered_name(self, organization_id: int | None = None) -> str:
        if self.naming == "shared":
            if organization_id is not None:
                raise ValueError(f"{self.name} is one model for every organization: no organization")
            return self.name
        if self.naming == "per_scenario":
            raise ValueError(f"{self.name} is one registered prompt per scenario: its registry names them")
        if organization_id is None:
            raise ValueError(f"{self.name} is one model per organization: give its organization id")
        return f"{self.model_prefix}{organization_id}"

    def owns(self, model_name: str) -> bool:
        # a per-organization (per-scenario) family owns every name that starts with its own
        return model_name.startswith(self.name) if self.naming != "shared" else model_name == self.name

    def validate(self, run_id: str) -> dict[str, Any]:
        if self.validator is not None:
            return self.validator(run_id)
        from neuracrm_mlops.quality.validation import validate_for_training

        return validate_for_training(self.dataset, run_id=run_id)

    def train(self, request: TrainRequest) -> dict[str, Any]:
        return self.trainer(request)

    def predicted_label(self, output: Mapping[str, Any]) -> str | None:
        return self.label_of(output)
