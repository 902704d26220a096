"""Everything Dagster, one folder per area; ``definitions.py`` (and ``monitoring.startup``) load it as a defs folder."""

import warnings

from dagster import BetaWarning


def ignore_dagster_false_alarms() -> None:
    """Silence what Dagster warns about the project for nothing it does (call it after importing Dagster's loaders,
    whose imports reset warning filters): Dagster copies every sensor whose job gets the Definitions' resources and
    passes ``owners=None`` to the copy, which warns that the (unused) parameter ``owners`` is in beta."""
    warnings.filterwarnings(
        "ignore", message="Parameter `owners` of initializer `SensorDefinition", category=BetaWarning
    )
