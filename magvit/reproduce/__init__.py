"""`magvit reproduce`: the papers' ablations as studies (arms x seeds, intervals, claims checked)."""

from magvit.reproduce import procedures  # register the procedures
from magvit.reproduce.study import (
    PROCEDURES,
    Context,
    StudyConfig,
    bootstrap_interval,
    list_studies,
    load_study,
    run_study,
    t_interval,
)

__all__ = ["PROCEDURES", "Context", "StudyConfig", "bootstrap_interval", "list_studies", "load_study", "procedures",
           "run_study", "t_interval"]
