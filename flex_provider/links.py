"""The "Flex results" extra link: where a task instance's results are, as a clickable URL.

How extra links work in Airflow 3: when a task instance ends, the task runner (on the worker) calls
``get_link(operator, ti_key=ti)`` of every link in ``operator_extra_links`` and stores the answer in
XCom under the link's ``xcom_key``; the API server (which has no operator code) reads that XCom when
the UI asks. So :meth:`FlexResultsLink.get_link` runs in the worker and reads the location the
operator pushed under :data:`RESULTS_XCOM_KEY` during ``execute``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

RESULTS_XCOM_KEY = "flex_results_uri"


def results_url(uri: str) -> str:
    """A browsable URL for a results location: ``s3://bucket/key`` -> the AWS console's folder view,
    ``gs://bucket/key`` -> the Google Cloud console's; anything else (``file://``...) as it is."""
    parts = urlsplit(uri)
    key = parts.path.strip("/")
    if parts.scheme in ("s3", "s3a") and parts.netloc:
        prefix = f"?prefix={quote(key + '/', safe='/')}" if key else ""
        return f"https://s3.console.aws.amazon.com/s3/buckets/{quote(parts.netloc)}{prefix}"
    if parts.scheme in ("gs", "gcs") and parts.netloc:
        return f"https://console.cloud.google.com/storage/browser/{quote(parts.netloc)}/{quote(key, safe='/')}"
    return uri


class FlexResultsLink(BaseOperatorLink):
    """ "Flex results": the output folder (``output_path``, or the task's checkpoint folder) of the run."""

    name = "Flex results"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom  # the configured XCom backend (resolved on import)

        value: Any = XCom.get_value(ti_key=ti_key, key=RESULTS_XCOM_KEY)
        if not value or not isinstance(value, str):
            return ""  # not pushed (the task failed before building its job): no link
        return results_url(value)
