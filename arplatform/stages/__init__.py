"""Driver-side orchestration, one module per stage: `run_<stage>(config) -> result`. A stage
never imports another; what two share lives in `jobs/`. The pipeline, which runs stages one
after another, is a command (`cli/pipeline.py`)."""
