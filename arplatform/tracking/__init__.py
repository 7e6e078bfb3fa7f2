"""What a person reads about a run: MLflow runs and stores (`mlflow_runs`), the pipeline's
report (`report`) and a sweep's pictures (`sweep_pictures`)."""
