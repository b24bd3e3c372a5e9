"""Training: the recipe, the loop, run state and logs, and the detector's own training."""
