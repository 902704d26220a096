"""Run states shared by the sensors: a run in one of these has not finished, so no second one is started beside it."""

from dagster import DagsterRunStatus

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
