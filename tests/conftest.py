"""Test-wide setup: a private AIRFLOW_HOME (SQLite) created before anything imports Airflow.

Airflow reads AIRFLOW_HOME and its config when first imported, so this happens at conftest import
time. Each pytest process gets its own folder: parallel runs never share a database.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="flex-tests-airflow-"))
(_HOME / "dags").mkdir()
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["FLEX_PROVIDER_CHECKPOINT_ROOT"] = f"file://{_HOME}/flex_checkpoints"
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
    os.environ.pop(_name, None)

AIRFLOW_TEST_HOME = _HOME
