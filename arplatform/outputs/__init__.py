"""Where outputs live and how they are kept: paths and buckets (`storage`), atomic publishing
of tokenizer versions (`publish`), training runs and sweeps (`runs`, `sweeps`), and folders of
generated samples (`sample_folder`)."""
