"""The result model (TrialResult, SweepResult) and the files it is kept in."""
