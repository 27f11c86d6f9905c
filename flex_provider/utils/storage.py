"""Storage locations: user URIs to ``ObjectStoragePath`` and the default checkpoint folder."""

from __future__ import annotations

import os
import re
from typing import Any

from airflow.sdk import ObjectStoragePath

from flex_provider.engine.errors import FlexInputError

CHECKPOINT_ROOT_ENV = "FLEX_PROVIDER_CHECKPOINT_ROOT"


def to_uri(value: Any, field: str) -> str:
    """Normalise a user path (URI, ObjectStoragePath or plain local path) to a URI string."""
    if isinstance(value, ObjectStoragePath):
        return str(value) if value.protocol else f"file://{os.path.abspath(value.path)}"
    if hasattr(value, "__fspath__"):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise FlexInputError(f"{field}: expected a URI such as file:///data/in.jsonl or s3://bucket/key, got {value!r}")
    text: str = value.strip()
    if "://" not in text:
        return "file://" + os.path.abspath(text)
    return text


def storage_path(uri: str) -> ObjectStoragePath:
    return ObjectStoragePath(uri)


def checked_path(uri: str, field: str) -> ObjectStoragePath:
    """``storage_path`` for a user-given URI: an unknown scheme or a missing filesystem package
    (``s3://`` without the amazon provider) is an input error naming the field."""
    try:
        return ObjectStoragePath(uri)
    except Exception as exc:
        raise FlexInputError(f"{field}: cannot use {uri!r}: {type(exc).__name__}: {exc}") from None


def path_kind(path: ObjectStoragePath, field: str) -> str | None:
    """``"file"``, ``"dir"``, ``"other"`` (a device, a pipe) or None (absent); a storage that cannot be
    reached is an error naming the field."""
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
        return "other" if path.exists() else None
    except Exception as exc:
        raise FlexInputError(f"{field}: cannot reach {path}: {type(exc).__name__}: {exc}") from None


def default_checkpoint_root() -> str:
    """Where XCom-mode runs keep their checkpoint. Workers and triggerers must both reach it: local
    disk is fine on one machine; in a distributed deployment point it at object storage with
    ``FLEX_PROVIDER_CHECKPOINT_ROOT`` or ``[flex_provider] checkpoint_root``."""
    root = os.environ.get(CHECKPOINT_ROOT_ENV)
    if not root:
        try:
            from airflow.sdk.configuration import conf

            root = conf.get("flex_provider", "checkpoint_root", fallback=None)
        except Exception:
            root = None
    if not root:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        root = os.path.join(home, "flex_checkpoints")
    return to_uri(root, "checkpoint_root")


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_segment(value: Any) -> str:
    """A run id like ``manual__2026-11-27T10:00:00+00:00`` as one portable path segment."""
    return _UNSAFE.sub("_", str(value)).strip("_") or "_"


def task_checkpoint_uri(root: str, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """One folder per task instance (not per try): a retry or a re-run of the same DAG run finds the
    results of the earlier try and pays only for what is missing."""
    parts = [safe_segment(dag_id), safe_segment(run_id), safe_segment(task_id)]
    if map_index is not None and map_index >= 0:
        parts.append(f"map_{map_index}")
    return root.rstrip("/") + "/" + "/".join(parts)
