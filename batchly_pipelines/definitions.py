"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location).

Everything Dagster lives in ``batchly_pipelines/defs/``, one folder per area (pull, push, conflicts, monitoring) plus the
shared resources and partitions; Dagster's defs-folder loading (``[tool.dg]`` in pyproject.toml) collects them.
"""

import warnings
from pathlib import Path

from dagster import BetaWarning
from dagster.components import load_from_defs_folder

# Dagster copies every sensor whose job gets the Definitions' resources and passes `owners=None` to the copy, which
# warns that the (unused) beta parameter `owners` is in beta — once per code server start, for nothing we set
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer `SensorDefinition", category=BetaWarning
)

defs = load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
