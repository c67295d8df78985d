"""Training: the trainers of the three families, evaluation, MLflow packaging and the
servability check a version passes before it may serve."""
