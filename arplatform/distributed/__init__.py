"""Only what runs inside Ray or starts it: cluster set-up, Ray Data code datasets, the Ray Train worker."""
