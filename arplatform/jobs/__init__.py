"""Pieces of a job that more than one stage runs: one training job on Ray Train (`training`,
the Tune trial `tune_trial`), the models and sampler settings of a sampling job (`sampling`),
generation into a sample folder (`generation`), the real images samples are scored against
and the scoring itself (`real_images`, `sample_quality`), the tokenizer's quality report
(`tokenizer_quality`). Stages import these; no stage imports another stage."""
