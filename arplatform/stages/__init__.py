"""Driver-side orchestration, one module per stage: `run_<stage>(config) -> result`."""
