"""`neuracrm-mlops demo --voice` end to end: two registered versions of sales_outbound, calls through a
real `bentoml serve` (POST /voice/context), Retell-signed call_analyzed events (POST /voice/events),
the canary judged on call success until the challenger is promoted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("voice_demo"), pytest.mark.timeout(600)]
CLI = Path(sys.executable).parent / "neuracrm-mlops"


def test_the_voice_demo_rolls_a_better_prompt_out_to_champion(tmp_path: Path, gx_root: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NEURACRM", "MLFLOW", "AIRFLOW"))},
        "NEURACRM_HOME": str(tmp_path / "home"),
        "NEURACRM_GX_ROOT": str(gx_root),
    }
    run = subprocess.run(
        [str(CLI), "demo", "--voice"], env=env, capture_output=True, text=True, timeout=540, check=False
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    for step in range(1, 6):
        assert f"{step}/5 " in out, f"step {step} missing:\n{out}"
    assert "registered v1 1.0.0 (first, the file in git) -> champion" in out
    assert re.search(r"registered v2 1\.1\.0 \(minor, .*\) -> challenger", out), out
    rounds = re.findall(r"round \d+: (.*?); (\w+): ", out)
    assert [action for _, action in rounds][-1] == "promote", out
    assert "next_step" in [action for _, action in rounds], out
    first_split = {route: int(n) for n, route in re.findall(r"(\d+) (\w+)", rounds[0][0])}
    assert 0 < first_split.get("challenger", 0) < first_split["champion"], rounds[0]  # 10% at first
    ledger_lines = out.split("5/5 the ledger", 1)[1]
    actions = re.findall(r"^\s+(promote|register|canary)\s", ledger_lines, re.MULTILINE)
    assert actions == ["promote", "register", "canary", "canary", "canary", "promote"], ledger_lines
