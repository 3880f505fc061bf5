"""`magvit reproduce`: the papers' ablations as studies (arms x seeds, intervals, claims checked)."""

from magvit.reproduce import procedures  # register the procedures
from magvit.reproduce.stats import bootstrap_interval, t_interval
from magvit.reproduce.study import PROCEDURES, Context, StudyConfig, list_studies, load_study, run_study

__all__ = ["PROCEDURES", "Context", "StudyConfig", "bootstrap_interval", "list_studies", "load_study", "procedures",
           "run_study", "t_interval"]
