"""What reaches the console: the project's own log records, and only errors from the
libraries beneath it (TFX's absl warnings, Beam's type-hint INFO, Python warnings routed
through logging as ``py.warnings``). Everything still goes to a run's log file."""
from __future__ import annotations

import logging

PROJECT_PACKAGES = frozenset({"funnelrank", "schemas", "transform", "serving", "trainer",
                              "pipeline", "benchmarks", "__main__"})


class ProjectOnly(logging.Filter):
    """A handler filter: the project's records at the handler's level, other loggers' records
    only from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.name.split(".", 1)[0] in PROJECT_PACKAGES
                or record.levelno >= logging.ERROR)
