"""One Tune trial: the training job's TorchTrainer (`jobs.training.build_trainer`) with the
trial's values; rank 0's epoch reports reach ASHA through `TuneReportCallback`. A restarted
trial keeps its id, run folder and Ray Train run, so it continues from its last checkpoint."""

from __future__ import annotations

import os

from ..config import TrainJobConfig, from_dict, to_dict
from ..config.train_plan import DataFacts
from ..config.tune_space import apply_params
from ..core.errors import TrainingError
from ..core.io import save_json
from ..outputs import runs, storage
from ..outputs.sweeps import Sweep


def tune_trial(params: dict, *, base_job: dict, facts: dict, rows: dict, sweep: dict, parent_run_id: str | None,
               config_name: str, dataset: dict | None = None) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..distributed.cluster import quiet_ray_logs
    from .training import build_trainer, copy_checkpoint_files, tracked

    quiet_ray_logs()
    job = from_dict(TrainJobConfig, apply_params(base_job, params))
    trial_id = tune.get_context().get_trial_id()
    run = Sweep(**sweep).trial_run(trial_id)
    if run.resumed and runs.read_state(run).get("tune_outcome") == "complete":
        # Tune ended this trial under an earlier driver, which died before Tune's own experiment
        # snapshot said so: its results are on disk already; training it again would change them
        return
    runs.note_tokenizer(run, DataFacts.from_dict(facts).identity())  # a tokenizer version a run names is kept
    tags = {"sweep": sweep["name"], "trial_id": trial_id}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # the MLflow UI nests the trial under its sweep
    root = storage.Root(job.output_root)
    # the sweep's driver ends this run (KILLED when ASHA stopped it): a trial stopped mid-fit would
    # otherwise race the driver to write its last status (`stages.tune.close_trial_runs`)
    with tracked(job, run, root, {**to_dict(job), "trial": params}, config_name, tags, ends_itself=False,
                 dataset=dataset) as (uri, mlflow_run_id):
        save_json(os.path.join(run.dir, "config.json"), to_dict(job) | {"config_name": config_name, "trial": params})
        trainer = build_trainer(job, DataFacts.from_dict(facts), rows, run, uri, mlflow_run_id,
                                callbacks=[TuneReportCallback()])
        result = trainer.fit()
        if (result.return_value or {}).get("error"):
            raise TrainingError(result.return_value["error"])
        copy_checkpoint_files(result.checkpoint, run.checkpoint_dir)  # from Ray's storage into the trial's folder
