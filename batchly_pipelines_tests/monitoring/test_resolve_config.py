"""``resolve_conflicts`` takes a typed config the launchpad scaffolds: the winner and the entity are choices, not
free text, and a wrong one is refused before the run starts."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterInvalidConfigError, validate_run_config
from dagster._config import ConfigTypeKind

from batchly_pipelines.definitions import defs


def _fields() -> dict[str, Any]:
    job = defs.resolve_job_def("resolve_conflicts")
    ops = job.run_config_schema.config_type.fields["ops"].config_type
    return dict(ops.fields["resolve_selected_conflicts"].config_type.fields["config"].config_type.fields)


def test_winner_and_entity_type_are_choices_the_launchpad_offers() -> None:
    fields = _fields()
    winner = fields["winner"].config_type
    assert winner.kind == ConfigTypeKind.ENUM and fields["winner"].is_required
    assert sorted(value.config_value for value in winner.enum_values) == ["batchly", "quickbooks", "value"]
    entity = fields["entity_type"].config_type  # optional: a choice or nothing
    assert entity.kind == ConfigTypeKind.NONEABLE and entity.inner_type.kind == ConfigTypeKind.ENUM
    assert sorted(value.config_value for value in entity.inner_type.enum_values) == ["customer", "item"]


def test_an_unknown_winner_is_refused_before_the_run_starts() -> None:
    job = defs.resolve_job_def("resolve_conflicts")
    config = {"ops": {"resolve_selected_conflicts": {"config": {"conflict_ids": [1], "winner": "mine"}}}}
    with pytest.raises(DagsterInvalidConfigError, match="winner"):
        validate_run_config(job, config)
