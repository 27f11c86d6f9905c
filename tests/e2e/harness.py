"""Run a real Apache Airflow 3.3 deployment as separate OS processes, for end-to-end tests.

Why a harness at all
--------------------
``dag.test()`` and ``airflow dags test`` run a deferred trigger inline, in the test process. That
says nothing about what matters for a deferrable operator: that the trigger serialises, that the
*triggerer* process can import and run it, that the trigger event travels through the metadata DB
back to a *new* operator instance on a worker, that trigger logs land where the UI looks, and that
a triggerer dying mid-flight (``kill -9``) loses nothing. Only real processes show that, so this
module starts ``api-server``, ``scheduler``, ``dag-processor`` and N ``triggerer`` processes, each
in its own process group, and drives them through the public REST API v2, like a user would.

Isolation
---------
Every cluster gets its own ``AIRFLOW_HOME``, SQLite file or PostgreSQL database, free TCP ports
(api-server, the scheduler's and each triggerer's log server) and random secrets, so parallel runs
never collide. All configuration is passed as ``AIRFLOW__SECTION__KEY`` environment variables;
``AIRFLOW*`` variables inherited from the calling shell are dropped so that a developer's own
Airflow setup cannot leak in. ``airflow.cfg`` is still written into the temporary home by the first
command (Airflow always does that), but every value that matters is overridden by the environment.

Process hygiene
---------------
The task supervisor and the triggerer's ``TriggerRunner`` subprocess call ``setpgid`` and so leave
the component's process group: ``killpg`` alone would leave orphans. :meth:`AirflowCluster.stop`
therefore signals the process trees (collected before killing), the groups, and finally sweeps
every process that still carries the cluster's mark: a unique environment variable inherited by
all descendants, or a working directory inside the cluster's home (``setproctitle``, used by the
api-server, serve-logs and LocalExecutor workers, blanks ``/proc/<pid>/environ``). Children also get
``PR_SET_PDEATHSIG`` so they are SIGTERMed when the test process dies (Linux ties that to the
*thread* that spawned them: drive a cluster from the main thread or another long-lived one), and
an ``atexit`` hook stops clusters that a crashing test forgot.

Speed
-----
On a 2-CPU box a cluster is ready in ~11-14 s (idle machine) and stops in ~3-4 s. Most of that is
CPU spent importing Airflow in five processes at once (the api-server alone builds ~800 FastAPI
routes, ~6 s of CPU). ``airflow db migrate`` is done once per test process into a template that
each cluster copies (SQLite) or clones (PostgreSQL ``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy
from sqlalchemy.pool import NullPool

__all__ = [
    "DEFAULT_PG_ADMIN_URL",
    "TERMINAL_RUN_STATES",
    "TERMINAL_TI_STATES",
    "AirflowCluster",
    "AirflowClusterError",
    "ComponentProcess",
    "copy_dag_files",
    "drop_stale_postgres_databases",
    "free_port",
    "postgres_available",
    "postgres_database",
    "postgres_template",
    "sqlite_template",
]

#: Admin connection used to create/drop throw-away databases (trust auth, no password).
DEFAULT_PG_ADMIN_URL = os.environ.get("FLEX_E2E_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

#: Environment variable stamped on every process a cluster starts, used for the orphan sweep.
CLUSTER_TAG_VAR = "FLEX_E2E_CLUSTER_ID"

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
_PR_SET_PDEATHSIG = 1


class AirflowClusterError(RuntimeError):
    """A component failed to start, died, or an API call failed; the message carries log tails."""


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def free_port() -> int:
    """Return a TCP port that is free right now on 127.0.0.1.

    The port is released before returning, so another process could grab it in between; with the
    kernel's ephemeral-port allocator that race is rare enough for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _set_pdeathsig() -> None:
    """``preexec_fn``: ask Linux to SIGTERM the child when the test process dies.

    SIGTERM (not SIGKILL) so the component shuts its own children down cleanly.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _airflow_command() -> list[str]:
    """The ``airflow`` entry point of the interpreter running the tests (the project venv)."""
    script = Path(sys.executable).with_name("airflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "airflow"]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def _process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its live descendants (collected *before* killing, see module doc)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _signal_procs(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


# --------------------------------------------------------------------------------------------------
# PostgreSQL throw-away databases
# --------------------------------------------------------------------------------------------------
def postgres_available(admin_url: str = DEFAULT_PG_ADMIN_URL, timeout: float = 2.0) -> bool:
    """True when psycopg2 is importable and the PostgreSQL server accepts a connection."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return False
    try:
        engine = sqlalchemy.create_engine(
            admin_url, poolclass=NullPool, connect_args={"connect_timeout": int(max(timeout, 1))}
        )
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_database(admin_url: str = DEFAULT_PG_ADMIN_URL, migrated: bool = True) -> Iterator[str]:
    """Create a fresh, uniquely named database and yield its SQLAlchemy URL; drop it afterwards.

    With ``migrated`` the database is cloned from this process's migrated template (see
    :func:`postgres_template`), so the cluster must be built with ``migrate=False``; otherwise
    it is empty. ``DROP DATABASE ... WITH (FORCE)`` (PostgreSQL 13+) also ends the sessions of
    killed components; older servers get an explicit ``pg_terminate_backend`` first.
    """
    template = postgres_template(admin_url) if migrated else None
    name = _pg_name("db")
    engine = sqlalchemy.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"{suffix}'))
    finally:
        engine.dispose()
    url = sqlalchemy.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        _drop_pg_database(admin_url, name)


# --------------------------------------------------------------------------------------------------
# migrated template databases (startup speed)
# --------------------------------------------------------------------------------------------------
# ``airflow db migrate`` costs ~3.5 s of CPU per cluster. Each test process migrates one template
# per backend once and clones it: a file copy for SQLite, ``CREATE DATABASE ... TEMPLATE`` for
# PostgreSQL. Templates live only as long as the test process (removed at exit).
_TEMPLATE_LOCK = threading.Lock()
_SQLITE_TEMPLATE: Path | None = None
_PG_TEMPLATES: dict[str, str] = {}
#: Settings that change what ``db migrate`` writes; a cluster whose ``env`` sets one migrates itself.
_TEMPLATE_SENSITIVE_PREFIXES = ("AIRFLOW__DATABASE__", "AIRFLOW__LOGGING__LOG_FILENAME_TEMPLATE")
_HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()) % 10**6:06d}"


def _migrate_env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        }
    )
    return env


def _run_migrate(home: Path, db_url: str, timeout: float = 300) -> None:
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [*_airflow_command(), "db", "migrate"],
        env=_migrate_env(home, db_url),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=True,
    )
    if result.returncode != 0:
        raise AirflowClusterError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def sqlite_template() -> Path:
    """Path of a migrated SQLite metadata DB for this test process (built on first use)."""
    global _SQLITE_TEMPLATE
    with _TEMPLATE_LOCK:
        if _SQLITE_TEMPLATE is None or not _SQLITE_TEMPLATE.exists():
            home = Path(tempfile.mkdtemp(prefix="flex-e2e-template-"))
            atexit.register(shutil.rmtree, home, True)
            db = home / "airflow.db"
            _run_migrate(home, f"sqlite:///{db}")
            _SQLITE_TEMPLATE = db
        return _SQLITE_TEMPLATE


def _pg_name(kind: str) -> str:
    return f"flex_e2e_{kind}_{_HOST_TAG}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


_PG_NAME_RE = re.compile(r"^flex_e2e_(?:db|tmpl)_(\d{6})_(\d+)_[0-9a-f]{8}$")


def _drop_pg_database(admin_url: str, name: str) -> None:
    engine = sqlalchemy.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            try:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


def drop_stale_postgres_databases(admin_url: str = DEFAULT_PG_ADMIN_URL) -> list[str]:
    """Drop databases left by test processes of *this host* that no longer exist (crashed runs)."""
    engine = sqlalchemy.create_engine(admin_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(sqlalchemy.text("SELECT datname FROM pg_database"))]
    finally:
        engine.dispose()
    dropped = []
    for name in names:
        m = _PG_NAME_RE.match(name)
        if m and m.group(1) == _HOST_TAG and not psutil.pid_exists(int(m.group(2))):
            with contextlib.suppress(Exception):
                _drop_pg_database(admin_url, name)
                dropped.append(name)
    return dropped


def postgres_template(admin_url: str = DEFAULT_PG_ADMIN_URL) -> str:
    """Name of a migrated PostgreSQL template database for this test process (built once)."""
    with _TEMPLATE_LOCK:
        if admin_url not in _PG_TEMPLATES:
            drop_stale_postgres_databases(admin_url)
            name = _pg_name("tmpl")
            engine = sqlalchemy.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as conn:
                    conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
            finally:
                engine.dispose()
            atexit.register(_drop_pg_database, admin_url, name)
            home = Path(tempfile.mkdtemp(prefix="flex-e2e-pg-template-"))
            try:
                url = sqlalchemy.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
                _run_migrate(home, url)
            finally:
                shutil.rmtree(home, ignore_errors=True)
            _PG_TEMPLATES[admin_url] = name
        return _PG_TEMPLATES[admin_url]


# --------------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------------
@dataclass
class ComponentProcess:
    """One started Airflow component (``airflow <command>``) and where its output goes."""

    name: str
    command: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    env_overrides: dict[str, str] = field(default_factory=dict)
    #: ``job.id`` of a triggerer's TriggererJob row (filled in once it heartbeats).
    job_id: int | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


_LIVE_CLUSTERS: weakref.WeakSet[AirflowCluster] = weakref.WeakSet()


@atexit.register
def _stop_leftover_clusters() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster.stop()


class AirflowCluster:
    """A real Airflow 3.3 deployment (api-server, scheduler, dag-processor, N triggerers).

    Usage::

        with AirflowCluster(home=tmp_path / "af", dags_folder=dags) as af:   # start() + stop()
            run_id = af.trigger_dag("my_dag", conf={"x": 1})
            assert af.wait_for_run("my_dag", run_id, timeout=120) == "success"
            assert af.xcom("my_dag", run_id, "task") == 42

    :param home: AIRFLOW_HOME to create (should be empty / not exist).
    :param dags_folder: folder with the DAG files (``[core] dags_folder``).
    :param db_url: SQLAlchemy URL of the metadata DB (empty, or pre-migrated with
        ``migrate=False``); ``None`` = SQLite file in ``home``. For SQLite with several
        components, Airflow relies on SQLite's file locking: fine for tests, but two triggerers
        on SQLite get no ``SKIP LOCKED`` row locking, so use PostgreSQL for HA tests.
    :param executor: ``[core] executor``. LocalExecutor works on SQLite in Airflow 3.3 (it is what
        ``airflow standalone`` uses); Airflow 3 no longer refuses it.
    :param env: extra environment variables for every component; they win over the defaults.
    :param triggerers: how many triggerer processes to start.
    :param parallelism: ``[core] parallelism``; LocalExecutor forks this many workers at start.
    :param triggerer_health_check_threshold: seconds without heartbeat after which a triggerer is
        considered dead and its triggers are taken over by another triggerer (Airflow default 30).
    :param startup_timeout: seconds to wait for all components to be healthy.
    :param migrate: run ``airflow db migrate`` in :meth:`start`. ``None`` = yes, unless the SQLite
        file was cloned from the template. Pass ``False`` for a DB from :func:`postgres_database`.
    :param use_db_template: with ``db_url=None``, copy a migrated SQLite template instead of
        migrating (saves ~3.5 s). Ignored when ``env`` changes database/log-template settings.
    :param fail_on_import_errors: DAG waits raise at once (with the traceback) when any DAG file
        has an import error. Set ``False`` to test broken DAG files on purpose.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        db_url: str | None = None,
        executor: str = "LocalExecutor",
        env: Mapping[str, str] | None = None,
        triggerers: int = 1,
        *,
        parallelism: int = 4,
        triggerer_health_check_threshold: int = 10,
        triggerer_heartbeat_sec: int = 2,
        startup_timeout: float = 120.0,
        username: str = "admin",
        password: str | None = None,
        migrate: bool | None = None,
        use_db_template: bool = True,
        fail_on_import_errors: bool = True,
    ) -> None:
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.db_url = db_url or f"sqlite:///{self.home / 'airflow.db'}"
        self.migrate = migrate
        self.fail_on_import_errors = fail_on_import_errors
        self.use_db_template = (
            use_db_template
            and db_url is None
            and not any(k.startswith(_TEMPLATE_SENSITIVE_PREFIXES) for k in (env or {}))
        )
        self.is_sqlite = self.db_url.startswith("sqlite")
        self.executor = executor
        self.extra_env = dict(env or {})
        self.initial_triggerers = triggerers
        self.parallelism = parallelism
        self.triggerer_health_check_threshold = triggerer_health_check_threshold
        self.triggerer_heartbeat_sec = triggerer_heartbeat_sec
        self.startup_timeout = startup_timeout
        self.username = username
        self.password = password or secrets.token_urlsafe(16)

        self.cluster_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.api_port = free_port()
        self.worker_log_server_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.logs_folder = self.home / "logs"
        self.proc_logs_folder = self.home / "logs-proc"

        # Secrets are random per cluster but identical for every component of it (a component
        # that generated its own would break the others): the scheduler/executor signs each
        # workload's Execution-API token with [api_auth] jwt_secret and the api-server verifies
        # it (and signs REST/UI tokens with it); [api] secret_key signs api-server sessions;
        # the fernet key encrypts trigger kwargs (written via the api-server, read by triggerers)
        # and connection/variable secrets in the DB.
        from cryptography.fernet import Fernet

        self.fernet_key = Fernet.generate_key().decode()
        self.jwt_secret = secrets.token_urlsafe(64)  # >= 64 bytes: HS512 warns below
        self.api_secret_key = secrets.token_urlsafe(32)

        self.processes: dict[str, ComponentProcess] = {}
        self.triggerer_names: list[str] = []
        self._pending_job_snapshot: dict[str, set[int]] = {}
        self.timings: dict[str, float] = {}
        self._http: httpx.Client | None = None
        self._token: str | None = None
        self._engine: sqlalchemy.Engine | None = None
        self._lock = threading.RLock()
        self._started = False
        self._stopped = False
        self.stop_forced: list[str] = []

    # ------------------------------------------------------------------ configuration
    def base_env(self) -> dict[str, str]:
        """Environment shared by every component (and by ``airflow`` CLI calls via :meth:`cli`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                CLUSTER_TAG_VAR: self.cluster_id,
                "AIRFLOW_HOME": str(self.home),
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
                # --- core
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
                # Workers (LocalExecutor task supervisors) talk to the Execution API of *this*
                # api-server; the default would be http://localhost:8080/execution/.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                # --- auth: SimpleAuthManager with one known admin user (see _write_password_file)
                "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__API__SECRET_KEY": self.api_secret_key,
                # --- database
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                # --- api-server
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                # --- logging (the log-server ports must not collide between parallel clusters)
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs_folder),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_server_port),
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                # --- dag processor: find new files fast, one parser process (small CI boxes)
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
                "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
                # re-parsing unchanged files only adds DB writes (SQLite has one writer)
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
                # default is $TMPDIR/airflow, shared by every Airflow on the machine
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "bundles"),
                # --- scheduler: short loops so tests do not wait on timers
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # --- triggerer: default capacity; fast heartbeat + short health threshold so a
                # SIGKILLed triggerer's triggers are re-assigned after ~threshold seconds
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(self.triggerer_heartbeat_sec),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(self.triggerer_health_check_threshold),
                # --- workers: heartbeat the api-server often, retry fast. The 5 s default HTTP
                # timeout is too short on a loaded 2-CPU box: the first PATCH .../run can take
                # ~6 s, the client then retries while the server finishes the first call.
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
                "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MIN": "0.5",
                "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": "5",
            }
        )
        env.update(self.extra_env)
        return env

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    def _write_password_file(self) -> None:
        """Pre-seed SimpleAuthManager's password file with a known password.

        Otherwise the api-server generates one and *prints it to its log*, which both hides it
        from the test and pollutes the secret scan of :meth:`all_log_text`.
        """
        self.password_file.write_text(json.dumps({self.username: self.password}) + "\n")
        self.password_file.chmod(0o600)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, wait_for_dags: Iterable[str] | None = None, wait_for_dag_files: bool = True) -> None:
        """Migrate the DB, start every component and wait until all are healthy.

        :param wait_for_dags: DAG ids that must be visible in the REST API before returning.
        :param wait_for_dag_files: also wait until every ``*.py`` file of the dags folder that
            Airflow's safe mode would parse (mentions "airflow" and "dag") is either the
            ``fileloc`` of a DAG or raises an import error (then :class:`AirflowClusterError`).
        """
        if self._started:
            raise AirflowClusterError("cluster already started")
        self._started = True
        _LIVE_CLUSTERS.add(self)
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.proc_logs_folder.mkdir(exist_ok=True)
        self.logs_folder.mkdir(exist_ok=True)
        self._write_password_file()

        if self.use_db_template and self.migrate is None:
            shutil.copyfile(sqlite_template(), self.home / "airflow.db")
        elif self.migrate is not False:
            self.cli("db", "migrate", timeout=300, log_name="db-migrate")
        self.timings["db_ready"] = time.monotonic() - t0

        # All components start together: they only need a migrated DB. The api-server is the
        # slowest (FastAPI app import) so it goes first. Extra triggerers start one after the
        # other (see start_triggerer) while the api-server is still booting.
        self._spawn("api-server", ["api-server", "--port", str(self.api_port), "--host", "127.0.0.1"])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        for _ in range(self.initial_triggerers):
            self.start_triggerer(wait=False, timeout=self.startup_timeout)

        self._wait_api_up(self.startup_timeout - (time.monotonic() - t0))
        self.timings["api_up"] = time.monotonic() - t0
        self._wait_healthy(self.startup_timeout - (time.monotonic() - t0))
        self.timings["healthy"] = time.monotonic() - t0
        # Triggerers are matched to their TriggererJob rows in start order (see start_triggerer).
        for name in self.triggerer_names:
            self._wait_triggerer_job(name, self.startup_timeout - (time.monotonic() - t0))
        self.timings["triggerers_registered"] = time.monotonic() - t0
        if wait_for_dag_files:
            self.wait_for_dag_files(timeout=max(self.startup_timeout - (time.monotonic() - t0), 30))
        for dag_id in wait_for_dags or ():
            self.wait_for_dag(dag_id, timeout=max(self.startup_timeout - (time.monotonic() - t0), 30))
        self.timings["ready"] = time.monotonic() - t0

    def cli(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        log_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a one-shot ``airflow <args>`` command against this cluster's configuration."""
        full_env = self.base_env()
        full_env.update(env or {})
        result = subprocess.run(
            [*_airflow_command(), *args],
            env=full_env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
            preexec_fn=_set_pdeathsig,
        )
        if log_name:
            (self.proc_logs_folder / f"{log_name}.log").write_text(result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise AirflowClusterError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def _spawn(self, name: str, args: Sequence[str], env_overrides: Mapping[str, str] | None = None) -> None:
        env = self.base_env()
        env.update(env_overrides or {})
        log_path = self.proc_logs_folder / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                [*_airflow_command(), *args],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session => own process group
                preexec_fn=_set_pdeathsig,
            )
        with self._lock:
            self.processes[name] = ComponentProcess(
                name=name,
                command=list(args),
                popen=popen,
                log_path=log_path,
                started_at=time.monotonic(),
                env_overrides=dict(env_overrides or {}),
            )

    def start_triggerer(self, wait: bool = True, timeout: float = 90.0) -> int:
        """Start one more triggerer process and return its index (``triggerer-<index>``).

        Each triggerer gets its own log-server port (``[logging] trigger_log_server_port``), else
        the second one on this host could not bind it.

        The ``job`` table has no pid column, so a triggerer is matched to its TriggererJob row by
        starting triggerers one at a time: the first TriggererJob id that did not exist before
        the spawn belongs to it. A call therefore first waits until the previously started
        triggerer has registered (a few seconds, overlapping with the api-server's own start).
        With ``wait`` it also waits for this one, so :attr:`ComponentProcess.job_id` is set.
        """
        for other in self.triggerer_names:
            self._wait_triggerer_job(other, timeout)
        index = len(self.triggerer_names)
        name = f"triggerer-{index}"
        known_ids = {r["id"] for r in self.sql("SELECT id FROM job WHERE job_type = 'TriggererJob'")}
        self.triggerer_names.append(name)
        self._spawn(
            name,
            ["triggerer"],
            env_overrides={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())},
        )
        self._pending_job_snapshot[name] = known_ids
        if wait:
            self._wait_triggerer_job(name, timeout)
        return index

    def triggerer(self, index: int) -> ComponentProcess:
        return self.processes[self.triggerer_names[index]]

    def kill_triggerer(self, index: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to triggerer ``index`` *and all its descendants*; return its pid.

        SIGKILL of the whole tree simulates losing the machine: the TriggerRunner child (own
        process group) dies too, no cleanup runs, the job row simply stops heartbeating.
        With SIGTERM the triggerer shuts down gracefully (and only the main process is signalled,
        as a supervisor would do).
        """
        proc = self.triggerer(index)
        if sig == signal.SIGKILL:
            tree = _process_tree(proc.pid)
            _signal_procs(tree, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            psutil.wait_procs(tree[1:], timeout=10)  # delivery is asynchronous
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)
        proc.killed = True
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=30)
        return proc.pid

    def stop(self, grace: float = 5.0) -> None:
        """Stop everything; never leaves a process behind, even when called after a failure.

        1. SIGTERM to each component's process group and to all its descendants,
        2. wait up to ``grace`` seconds,
        3. SIGKILL the remaining trees and groups,
        4. SIGKILL any process on the machine still carrying this cluster's tag.

        ``grace`` is short on purpose: a test cluster loses nothing by being killed, and the
        triggerer now and then waits its full 10 s ``escalation_delay`` for its TriggerRunner.
        Components that needed the SIGKILL are listed in :attr:`stop_forced`.
        """
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        if self._http is not None:  # an open keep-alive connection delays uvicorn's shutdown
            self._http.close()
            self._http = None
        with self._lock:
            procs = list(self.processes.values())
        trees: list[psutil.Process] = []
        for proc in procs:
            tree = _process_tree(proc.pid)
            trees.extend(tree)
            if proc.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
            # Descendants in their own process groups (TriggerRunner, task supervisors) get the
            # SIGTERM too: else the triggerer waits 10 s (escalation_delay) for its runner.
            _signal_procs(tree[1:], signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
        #: components that ignored SIGTERM for ``grace`` seconds (diagnostics)
        self.stop_forced = [p.name for p in procs if p.alive()]
        for proc in procs:
            trees.extend(_process_tree(proc.pid))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        _signal_procs(trees, signal.SIGKILL)
        self._sweep_tagged(signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        _LIVE_CLUSTERS.discard(self)
        self.timings["stop"] = time.monotonic() - t0

    def tagged_processes(self) -> list[psutil.Process]:
        """Every live process started (directly or not) by this cluster.

        Two marks, because neither is enough alone: the environment tag is inherited by every
        descendant but ``setproctitle`` (api-server, serve-logs, LocalExecutor workers) overwrites
        the memory that ``/proc/<pid>/environ`` shows; the working directory (``home``) survives
        setproctitle but a subprocess may change it (e.g. BashOperator's temp cwd).
        """
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(CLUSTER_TAG_VAR) == self.cluster_id:
                    found.append(proc)
                    continue
                cwd = Path(proc.cwd())
                if cwd == self.home or self.home in cwd.parents:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    def _sweep_tagged(self, sig: int) -> None:
        for _ in range(3):
            left = [p for p in self.tagged_processes() if p.status() != psutil.STATUS_ZOMBIE]
            if not left:
                return
            _signal_procs(left, sig)
            psutil.wait_procs(left, timeout=3)

    # ------------------------------------------------------------------ waiting for health
    def _check_processes(self) -> None:
        """Raise (with the log tail) if a component that should run has exited."""
        for proc in list(self.processes.values()):
            if not proc.killed and not proc.alive():
                raise AirflowClusterError(
                    f"{proc.name} exited with {proc.popen.returncode}; last log lines "
                    f"({proc.log_path}):\n{_tail(proc.log_path)}"
                )

    def _wait(self, what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Poll ``predicate`` until it returns a value; fail early if a component died."""
        deadline = time.monotonic() + max(timeout, 1)
        last_exc: Exception | None = None
        while True:
            self._check_processes()
            try:
                result = predicate()
                # None/False/empty = not yet; 0 is a valid answer (e.g. triggerer index 0)
                if result is not None and result is not False and result != {} and result != []:
                    return result
            except AirflowClusterError:
                raise
            except Exception as exc:  # transient (server still starting, DB locked, ...)
                last_exc = exc
            if time.monotonic() > deadline:
                raise AirflowClusterError(
                    f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc!r})\n"
                    + self.diagnostics()
                )
            time.sleep(interval)

    def _wait_api_up(self, timeout: float) -> None:
        def up() -> bool:
            return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200

        self._wait("api-server to answer", up, timeout, interval=0.25)

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no auth needed)."""
        return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()

    def _wait_healthy(self, timeout: float) -> None:
        def healthy() -> bool:
            h = self.health()
            wanted = ["metadatabase", "scheduler", "dag_processor"]
            if self.initial_triggerers:
                wanted.append("triggerer")
            return all((h.get(k) or {}).get("status") == "healthy" for k in wanted)

        self._wait("all components healthy", healthy, timeout, interval=0.25)

    def _wait_triggerer_job(self, name: str, timeout: float) -> int:
        """Wait until triggerer ``name`` has created its TriggererJob row; return ``job.id``."""
        proc = self.processes[name]
        if proc.job_id is not None:
            return proc.job_id
        known = self._pending_job_snapshot[name]

        def new_job() -> int | None:
            rows = self.sql("SELECT id FROM job WHERE job_type = 'TriggererJob' ORDER BY id")
            fresh = [r["id"] for r in rows if r["id"] not in known]
            return fresh[0] if fresh else None

        proc.job_id = self._wait(f"{name} to register its TriggererJob", new_job, timeout, 0.25)
        return proc.job_id

    def wait_for_dag(self, dag_id: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until ``dag_id`` is parsed and visible in the REST API; return its DAG resource."""

        def visible() -> dict[str, Any] | None:
            self._raise_import_errors()
            r = self.api("GET", f"/dags/{dag_id}", expect=None)
            return r.json() if r.status_code == 200 else None

        return self._wait(f"DAG {dag_id} to be parsed", visible, timeout)

    def _expected_dag_files(self) -> set[str]:
        files = set()
        for path in self.dags_folder.rglob("*.py"):
            try:
                text = path.read_text(errors="replace").lower()
            except OSError:
                continue
            if "airflow" in text and "dag" in text:
                files.add(str(path.resolve()))
        return files

    def wait_for_dag_files(self, timeout: float = 60) -> None:
        """Wait until every DAG file of the dags folder has been parsed (see :meth:`start`)."""
        expected = self._expected_dag_files()
        if not expected:
            return

        def parsed() -> bool:
            errors = self._raise_import_errors()
            dags = self.api("GET", "/dags", params={"limit": 100}).json()["dags"]
            seen = {str(Path(d["fileloc"]).resolve()) for d in dags if d.get("fileloc")}
            seen |= {str((self.dags_folder / e["filename"]).resolve()) for e in errors if e.get("filename")}
            return expected <= seen

        self._wait("DAG files to be parsed", parsed, timeout)

    def import_errors(self) -> list[dict[str, Any]]:
        return self.api("GET", "/importErrors", params={"limit": 100}).json()["import_errors"]

    def _raise_import_errors(self) -> list[dict[str, Any]]:
        """Raise on import errors (unless ``fail_on_import_errors`` is off); return them."""
        errors = self.import_errors()
        if errors and self.fail_on_import_errors:
            text = "\n\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
            raise AirflowClusterError(f"DAG import errors:\n{text}")
        return errors

    # ------------------------------------------------------------------ REST API
    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=30)
        return self._http

    def token(self, refresh: bool = False) -> str:
        """JWT from SimpleAuthManager's ``POST /auth/token`` (username/password JSON body)."""
        if self._token is None or refresh:
            r = self.http.post("/auth/token", json={"username": self.username, "password": self.password})
            if r.status_code not in (200, 201):
                raise AirflowClusterError(f"login failed: {r.status_code} {r.text}")
            self._token = r.json()["access_token"]
        return self._token

    def api(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        expect: int | Iterable[int] | None = (200, 201, 204),
    ) -> httpx.Response:
        """Call ``/api/v2<path>`` with the bearer token; raise unless the status is expected."""
        url = path if path.startswith("/api/") else f"/api/v2{path}"
        for attempt in range(2):
            r = self.http.request(
                method,
                url,
                json=json_body,
                params=params,
                headers={"Authorization": f"Bearer {self.token(refresh=attempt > 0)}"},
            )
            if r.status_code != 401:
                break
        if expect is not None:
            allowed = {expect} if isinstance(expect, int) else set(expect)
            if r.status_code not in allowed:
                raise AirflowClusterError(f"{method} {url} -> {r.status_code}: {r.text[:2000]}")
        return r

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json_body={"is_paused": False})

    def trigger_dag(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        wait_for_dag_timeout: float = 60,
    ) -> str:
        """Unpause ``dag_id`` (waiting for it to be parsed first) and create a manual run.

        ``logical_date`` is sent as ``null`` (Airflow 3: manual runs need no logical date), so
        the same DAG can be triggered many times per second.
        """
        self.wait_for_dag(dag_id, timeout=wait_for_dag_timeout)
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        r = self.api("POST", f"/dags/{dag_id}/dagRuns", json_body=body)
        return str(r.json()["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 120, states: Iterable[str] = TERMINAL_RUN_STATES
    ) -> str:
        """Poll the run until its state is in ``states`` (default: success/failed); return it."""
        wanted = set(states)

        def done() -> str | None:
            state = self.dag_run(dag_id, run_id)["state"]
            return state if state in wanted else None

        try:
            return self._wait(f"run {dag_id}/{run_id} to reach {sorted(wanted)}", done, timeout, 0.5)
        except AirflowClusterError as exc:
            raise AirflowClusterError(f"{exc}\ntask instances: {self._ti_summary(dag_id, run_id)}") from None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """All task instances of the run (every map index), as returned by the REST API.

        Each dict has at least ``task_id``, ``state``, ``try_number``, ``map_index``.
        """
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.api(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": offset},
            ).json()
            out.extend(page["task_instances"])
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return out

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        for ti in self.task_instances(dag_id, run_id):
            if ti["task_id"] == task_id and ti["map_index"] == map_index:
                return ti
        raise AirflowClusterError(f"no task instance {task_id}[{map_index}] in {dag_id}/{run_id}")

    def _ti_summary(self, dag_id: str, run_id: str) -> str:
        try:
            return ", ".join(
                f"{t['task_id']}[{t['map_index']}]={t['state']}(try {t['try_number']})"
                for t in self.task_instances(dag_id, run_id)
            )
        except Exception as exc:
            return f"<unavailable: {exc!r}>"

    def wait_for_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: str | Iterable[str],
        timeout: float = 120,
        map_index: int = -1,
        fail_fast: bool = True,
    ) -> dict[str, Any]:
        """Wait until the task instance is in one of ``states``; return the task instance.

        With ``fail_fast`` a task that reaches a *different* terminal state (success, failed,
        skipped, ...) raises at once instead of waiting for the timeout.
        """
        wanted = {states} if isinstance(states, str) else set(states)

        def reached() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id, map_index)
            if ti["state"] in wanted:
                return ti
            if fail_fast and ti["state"] in TERMINAL_TI_STATES:
                raise AirflowClusterError(
                    f"{task_id}[{map_index}] reached {ti['state']} while waiting for {sorted(wanted)}"
                )
            return None

        return self._wait(f"{task_id}[{map_index}] in {sorted(wanted)}", reached, timeout, 0.3)

    def clear_task(self, dag_id: str, run_id: str, task_id: str | Sequence[str], **options: Any) -> dict[str, Any]:
        """``POST /dags/{dag_id}/clearTaskInstances`` for one run (whatever the task states).

        Extra ``options`` go into the body (e.g. ``include_downstream=True``).
        """
        task_ids = [task_id] if isinstance(task_id, str) else list(task_id)
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
            **options,
        }
        return self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json_body=body).json()

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The XCom value as a Python object.

        The API's native format returns the stored JSON decoded once, which is exactly the pushed
        value for JSON-native types (a returned ``"42"`` stays a string). Non-JSON types come back
        in Airflow's encoded form, e.g. a tuple as ``{"__classname__": "builtins.tuple", ...}``.
        """
        r = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index},
        )
        return r.json()["value"]

    def task_log_via_api(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task log as the UI shows it (includes trigger log sections)."""
        r = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
        )
        return r.text

    # ------------------------------------------------------------------ files & DB
    def task_log_dir(self, dag_id: str, run_id: str, task_id: str) -> Path:
        """Folder of the default ``[logging] log_filename_template``."""
        return self.logs_folder / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        """Every log file of that task: ``[map_index=M/]attempt=N.log`` written by the worker and
        ``attempt=N.log.trigger.<triggerer job id>.log`` written by each triggerer that ran its
        trigger (Airflow 3.3 ``TriggerRunnerSupervisor``: ``f"{log_path}.trigger.{job.id}.log"``).
        """
        folder = self.task_log_dir(dag_id, run_id, task_id)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("attempt=*") if p.is_file())

    @staticmethod
    def trigger_log_files(files: Iterable[Path]) -> list[Path]:
        """Filter :meth:`task_log_files` output down to trigger logs."""
        return [p for p in files if re.search(r"\.log\.trigger\.\d+\.log$", p.name)]

    def all_log_text(self) -> str:
        """Every log file of the cluster (task, trigger, component, process logs) concatenated,
        each preceded by a ``==> path <==`` header; for secret scanning."""
        parts = []
        for folder in (self.logs_folder, self.proc_logs_folder):
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    parts.append(f"==> {path} <==\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    @property
    def engine(self) -> sqlalchemy.Engine:
        if self._engine is None:
            connect_args: dict[str, Any] = {"timeout": 30} if self.is_sqlite else {}
            self._engine = sqlalchemy.create_engine(self.db_url, poolclass=NullPool, connect_args=connect_args)
        return self._engine

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query on the metadata DB and return rows as dicts.

        e.g. ``af.sql("SELECT id, classpath, triggerer_id FROM trigger")`` or
        ``af.sql("SELECT next_kwargs FROM task_instance WHERE task_id = :t", {"t": "wait"})``.
        Values are raw driver values: JSON columns (``next_kwargs``, ``xcom.value``) come back as
        text on SQLite but as Python objects on PostgreSQL; use :meth:`decode_json` on them.
        ``trigger.kwargs`` is Fernet-encrypted (key: :attr:`fernet_key`).
        """
        with self.engine.connect() as conn:
            result = conn.execute(sqlalchemy.text(query), dict(params or {}))
            return [dict(row._mapping) for row in result]

    @staticmethod
    def decode_json(value: Any) -> Any:
        """Decode a JSON column value read with :meth:`sql` the same way on every backend."""
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def triggerer_jobs(self) -> list[dict[str, Any]]:
        """Rows of the ``job`` table for triggerers (id, state, hostname, latest_heartbeat)."""
        return self.sql(
            "SELECT id, state, hostname, latest_heartbeat, start_date, end_date FROM job "
            "WHERE job_type = 'TriggererJob' ORDER BY id"
        )

    def trigger_rows(self) -> list[dict[str, Any]]:
        """Rows of the ``trigger`` table (kwargs stay encrypted)."""
        return self.sql("SELECT id, classpath, created_date, triggerer_id FROM trigger ORDER BY id")

    def trigger_of(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        """The trigger row of a deferred task instance (``None`` when it has none)."""
        rows = self.sql(
            "SELECT t.id, t.classpath, t.triggerer_id FROM task_instance ti "
            "JOIN trigger t ON t.id = ti.trigger_id "
            "WHERE ti.dag_id = :d AND ti.run_id = :r AND ti.task_id = :t AND ti.map_index = :m",
            {"d": dag_id, "r": run_id, "t": task_id, "m": map_index},
        )
        return rows[0] if rows else None

    def triggerer_index_for_job(self, job_id: int | None) -> int | None:
        for i, name in enumerate(self.triggerer_names):
            if self.processes[name].job_id == job_id:
                return i
        return None

    def wait_for_trigger_assignment(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        timeout: float = 60,
        map_index: int = -1,
        exclude_job_ids: Iterable[int] = (),
    ) -> int:
        """Wait until the task's trigger is held by a triggerer (other than ``exclude_job_ids``);
        return that triggerer's index in this cluster."""
        excluded = set(exclude_job_ids)

        def held() -> int | None:
            row = self.trigger_of(dag_id, run_id, task_id, map_index)
            if row and row["triggerer_id"] is not None and row["triggerer_id"] not in excluded:
                return self.triggerer_index_for_job(row["triggerer_id"])
            return None

        return self._wait(f"trigger of {task_id} to be assigned", held, timeout, 0.3)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, lines: int = 40) -> str:
        """Tails of every component log (attached to timeout errors)."""
        out = [f"AIRFLOW_HOME={self.home}"]
        for proc in list(self.processes.values()):
            state = "alive" if proc.alive() else f"exit {proc.popen.returncode}"
            out.append(f"---- {proc.name} (pid {proc.pid}, {state}) {proc.log_path}")
            out.append(_tail(proc.log_path, lines))
        return "\n".join(out)


def copy_dag_files(dags_folder: Path, files: Mapping[str, str]) -> None:
    """Write ``{relative name: source}`` into ``dags_folder`` (helper for tests)."""
    dags_folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = dags_folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
