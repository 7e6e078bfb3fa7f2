"""What runs inside Ray or starts it: cluster set-up, Ray Data code datasets, the Ray Train
worker, the tokenizer's and the sampler's actors (`image_sampler` is also the local engine)."""
