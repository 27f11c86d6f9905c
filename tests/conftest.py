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
# What a deployment running flex tasks sets (Airflow ships False): FlexLLMOperator follows it.
os.environ["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"
os.environ["FLEX_PROVIDER_CHECKPOINT_ROOT"] = f"file://{_HOME}/flex_checkpoints"
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
    os.environ.pop(_name, None)

AIRFLOW_TEST_HOME = _HOME

# Imported after the environment is set: nothing below may read Airflow's config earlier.
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from flex_provider.emulator import EmulatorConfig, EmulatorServer, serve_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def emulator_base_config() -> EmulatorConfig:
    """Knobs every test of a module starts from; test folders override it with their own key."""
    return EmulatorConfig(latency_s=0.02, latency_jitter=0.5, standard_latency_s=0.005)


@pytest.fixture(scope="module")
def emulator_server(emulator_base_config: EmulatorConfig) -> Iterator[EmulatorServer]:
    """One emulator per test module, in a thread, on a free port, reached over real HTTP."""
    with serve_in_thread(emulator_base_config) as server:
        yield server


@pytest.fixture
def emu(emulator_server: EmulatorServer, emulator_base_config: EmulatorConfig) -> EmulatorServer:
    """The module's emulator with its base knobs restored and its stats cleared."""
    emulator_server.update(**emulator_base_config.model_dump())
    emulator_server.reset()
    return emulator_server
