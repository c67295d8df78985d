"""A real CRM-like export (UCI Bank Marketing, ../shared/datasets) trains, explains and serves."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import real_datasets  # benchmarks/ is on the test path (pyproject: pythonpath)
from sklearn.metrics import roc_auc_score

from neuracrm_mlops.models import lead_scoring_model as lsm
from neuracrm_mlops.training.servability import jsonable_records

BANK_FILE = real_datasets.datasets_dir() / "bank_marketing" / "bank-additional-full.csv"
BANK_ROWS = 41_188

pytestmark = pytest.mark.skipif(
    not BANK_FILE.is_file(), reason=f"{BANK_FILE} is missing (the shared real datasets are not here)"
)


@pytest.fixture(scope="module")
def bank_slice() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest 600 calls (as an organization with a short history would have): first 80% train."""
    leads = real_datasets.bank_as_crm_leads(real_datasets.bank_leads(600, start=BANK_ROWS - 600))
    return leads.iloc[:480].reset_index(drop=True), leads.iloc[480:].reset_index(drop=True)


def test_a_real_600_lead_slice_trains_and_ranks_its_newest_leads_better_than_chance(
    bank_slice: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train_part, test_part = bank_slice
    model = lsm.train(train_part, train_part["converted"])
    assert model.attribute_numeric  # age, campaign, euribor3m, ...: numbers from the attributes
    assert "attr_marital" in model.attribute_categorical
    assert model.spec.groups_without_inputs == (
        "industry",
        "company_size",
        "engagement",
        "urgency",
        "text_insights",
    )
    auc = roc_auc_score(test_part["converted"], model.predict_proba(test_part))
    assert auc > 0.5

    results: list[dict[str, Any]] = lsm.predict(model, test_part)
    assert all(len(r["factors"]) == 3 for r in results)
    named = [f["text"] for r in results for f in r["factors"] if f["group"] == "other_fields"]
    assert named and all(t.startswith("Other fields: ") and " = " in t for t in named)
    lean = lsm.compile_scorer(model)
    assert lean.predict(jsonable_records(test_part)) == results
