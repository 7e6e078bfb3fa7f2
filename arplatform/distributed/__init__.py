"""Ray wiring: cluster set-up, Ray Data code datasets, the Ray Train job."""
