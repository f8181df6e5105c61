"""Training: the loop (checkpoints, resume, mixed precision, the decoder phase) and the MLflow run around it."""
