"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location).

Everything Dagster lives in ``batchly_pipelines/defs/``, one folder per area (pull, push, conflicts, monitoring) plus the
shared resources and partitions; Dagster's defs-folder loading (``[tool.dg]`` in pyproject.toml) collects them.
"""

from pathlib import Path

from dagster.components import load_from_defs_folder

from batchly_pipelines.defs import ignore_dagster_false_alarms

ignore_dagster_false_alarms()
defs = load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
