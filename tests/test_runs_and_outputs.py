"""Outputs that cannot be half-published or escape output_root, race-free stores, one source of defaults."""

import dataclasses
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import typing

import pytest
import yaml

from arplatform.cli import CONFIG_DIR
from arplatform.config import (
    SCHEMAS,
    ConfigError,
    PipelineConfig,
    SamplerSweepConfig,
    TokenizerConfig,
    TrainJobConfig,
    compose,
    config_names,
    from_dict,
    to_dict,
)
from arplatform.outputs import publish, storage
from arplatform.tracking import mlflow_runs

SENTINELS = ("mlflow.db", "codebook/other/codebook.pt", "transformer/x/checkpoints/best.pt")


def _fill(root):
    for rel in SENTINELS:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(rel)


@pytest.mark.parametrize("name", ["..", "", "a/b", ".", "../../etc", "-rf"])
def test_unsafe_tokenizer_names_are_refused_and_nothing_is_deleted(tmp_path, name):
    """The first name through the command in a process of its own; the others through the same
    entry point in this one (`helpers.run_main`), which saves a Python start each."""
    from helpers import run_main

    from arplatform.cli import tokenize

    root = tmp_path / "out"
    _fill(root)
    before = sorted((p, open(os.path.join(d, p)).read()) for d, _, fs in os.walk(root) for p in fs)
    args = ["--config-name", "tokenizer/mnist_sample", f"output_root={root}", f"name={name}"]
    if name == "..":
        proc = subprocess.run([sys.executable, "-m", "arplatform", "tokenize", *args], capture_output=True, text=True,
                              timeout=120)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = run_main(tokenize.main, args)
    assert code == 2, err
    assert err.startswith("error: name:") and err.strip().count("\n") == 0, err
    after = sorted((p, open(os.path.join(d, p)).read()) for d, _, fs in os.walk(root) for p in fs)
    assert after == before


def test_unsafe_run_names_are_refused():
    from arplatform.core.errors import ConfigError

    for bad in ("..", "a/b", ""):
        with pytest.raises(ConfigError, match="run_name: .* is not a safe name"):
            from_dict(TrainJobConfig, {"name": "m", "run_name": bad, "data": {"codes": "x.npy"}})
        with pytest.raises(ConfigError, match="name: .* is not a safe name"):
            from_dict(TrainJobConfig, {"name": bad, "data": {"codes": "x.npy"}})


# -- the tokenizer's publish under SIGKILL -------------------------------------------


def fork_server():
    """Processes of their own for the tests that race or kill them, forked from a fresh server
    process (not from this one) that has made the imports once, not once per process."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["arplatform.outputs.publish", "arplatform.tracking.mlflow_runs", "mlflow", __name__])
    return ctx


def _publish_forever(root: str, started) -> None:
    """Publish versions 0, 1, 2 … of tokenizer 'm' as fast as possible; each version's VAE and
    codebook folder carry its number (a stand-in for real weights: the publish is what is tested)."""
    i = 0
    started.set()
    while True:
        staging = publish.staging_dir(storage.Root(root), "m")
        for part in ("vae/checkpoints/best.pt", "codebook/codebook.pt", "codebook/codes.npy"):
            path = os.path.join(staging, part)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(str(i))
        publish.publish(storage.Root(root), "m", staging)
        i += 1


def test_a_killed_processs_scratch_folder_is_removed_by_the_next_and_a_live_ones_kept():
    """A SIGKILL runs no `finally`: the scratch folder (a worker's checkpoints, a pinned copy) of a
    killed process stays until the next `scratch_dir` on the machine removes it; a live process's
    is kept."""
    from arplatform.core.io import scratch_dir, scratch_parent

    hold = ("import sys, time\nfrom arplatform.core.io import scratch_dir\n"
            "with scratch_dir('test') as d:\n    open(d + '/best.pt', 'w').write('x')\n"
            "    print(d, flush=True)\n    time.sleep(600)\n")
    dead, live = (subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
                  for _ in range(2))
    try:
        dead_dir, live_dir = dead.stdout.readline().strip(), live.stdout.readline().strip()
        assert os.path.isfile(os.path.join(dead_dir, "best.pt")) and os.path.dirname(dead_dir) == scratch_parent()
        dead.kill()
        dead.wait()
        assert os.path.isdir(dead_dir)  # nothing ran when it died
        with scratch_dir("test") as mine:
            assert os.path.isdir(mine) and not os.path.exists(dead_dir) and not os.path.exists(dead_dir + ".lock")
            assert os.path.isfile(os.path.join(live_dir, "best.pt"))  # its process is alive
        assert not os.path.exists(mine) and not os.path.exists(mine + ".lock")
    finally:
        for proc in (dead, live):
            proc.kill()
            proc.wait()
        with scratch_dir("test"):  # the folders of both, removed
            pass


def _visible(root: str):
    try:
        return tuple(open(os.path.join(root, p)).read() for p in
                     ("vae_m/checkpoints/best.pt", "codebook/m/codebook.pt", "codebook/m/codes.npy"))
    except FileNotFoundError:
        return None


@pytest.mark.slow  # a process killed at each of many points: 6 s
def test_a_kill_at_any_point_of_publish_leaves_old_or_new_never_a_mix(tmp_path):
    root = str(tmp_path)
    ctx = fork_server()
    seen = []
    rng = random.Random(0)
    for _ in range(15):
        started = ctx.Event()
        proc = ctx.Process(target=_publish_forever, args=(root, started))
        proc.start()
        assert started.wait(timeout=60)
        time.sleep(rng.random() * 0.1)  # a random point of some publish (each takes about a millisecond)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        visible = _visible(root)
        if visible is None:  # killed before its first publish ever finished
            assert not seen
            continue
        assert len(set(visible)) == 1, f"VAE, codebook and codes of different versions: {visible}"
        seen.append(int(visible[0]))
    assert seen, "no publish finished in any of the runs"
    publish.clean_stale(root, "m")  # what the next tokenizer run does first
    leftovers = [e for e in os.listdir(root) if e.startswith(publish.STAGING_PREFIX) or ".link-" in e]
    leftovers += [e for e in os.listdir(os.path.join(root, "codebook")) if ".link-" in e]
    assert not leftovers
    versions = [v for v in os.listdir(publish.versions_dir(root, "m")) if v != "current"]
    assert 1 <= len(versions) <= 2, versions  # the current version and at most the one before it
    assert _visible(root) is not None and len(set(_visible(root))) == 1


def test_leftovers_of_dead_publishers_are_cleaned_and_live_ones_kept(tmp_path):
    """What a SIGKILL can leave at each step of a publish: a staging folder, a version never made
    current, a half-made link beside each of the three links. Liveness is the publisher's lock,
    not its pid: a dead publisher whose pid now belongs to a live process (pid 1 here) is dead."""
    root = str(tmp_path)
    code = f"from arplatform.outputs import publish, storage; print(publish.staging_dir(storage.Root({root!r}), 'm'))"
    # exits holding its lock: freed
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert dead.returncode == 0, dead.stderr
    dead_token = "-".join(dead.stdout.strip().rsplit("-", 2)[-2:])
    staging = publish.staging_dir(storage.Root(root), "m")  # a live publisher's (this process)
    live_token = "-".join(staging.rsplit("-", 2)[-2:])
    recycled = "1-abc123"  # pid 1 is alive, but no publisher holds this token's lock
    for token in (dead_token, live_token, recycled):
        if token != live_token:
            os.makedirs(os.path.join(root, f"{publish.STAGING_PREFIX}m-{token}"), exist_ok=True)
        os.makedirs(os.path.join(publish.versions_dir(root, "m"), f"20260101-000000-{token}"))
        os.makedirs(os.path.join(root, "codebook"), exist_ok=True)
        for link in (os.path.join(root, f"vae_m.link-{token}"), os.path.join(root, "codebook", f"m.link-{token}"),
                     os.path.join(publish.versions_dir(root, "m"), f"current.link-{token}")):
            os.symlink("nowhere", link)
    publish.clean_stale(root, "m")
    left = sorted(e for d in (root, os.path.join(root, "codebook"), publish.versions_dir(root, "m"))
                  for e in os.listdir(d))
    assert not [e for e in left if dead_token in e or recycled in e], left
    assert len([e for e in left if live_token in e]) == 5 and os.path.isdir(staging)
    publish.discard(storage.Root(root), staging)
    publish.clean_stale(root, "m")  # released: its leftovers are anybody's to remove now
    assert not os.path.exists(staging)
    assert not [e for e in os.listdir(publish.versions_dir(root, "m")) if live_token in e]


def test_codebook_names_its_vae_relative_to_itself(tmp_path):
    """The VAE path inside codebook.pt resolves from any working directory, through the links."""
    import torch

    from arplatform.core.codebook import save_codebook
    from arplatform.outputs.publish import codebook_vae_path

    staging = publish.staging_dir(storage.Root(str(tmp_path)), "m")
    os.makedirs(os.path.join(staging, "vae", "checkpoints"))
    open(os.path.join(staging, "vae", "checkpoints", "best.pt"), "w").close()
    save_codebook(os.path.join(staging, "codebook", "codebook.pt"), torch.zeros(4, 2),
                  {"vae_checkpoint": os.path.join("..", "vae", "checkpoints", "best.pt")})
    publish.publish(storage.Root(str(tmp_path)), "m", staging)
    cwd = os.getcwd()
    try:
        os.chdir("/")
        path = codebook_vae_path(os.path.join(tmp_path, "codebook", "m", "codebook.pt"))
    finally:
        os.chdir(cwd)
    assert os.path.exists(path) and os.path.samefile(path, tmp_path / "vae_m" / "checkpoints" / "best.pt")


# -- MLflow: two first runs in a fresh store --------------------------------------------


def _start_run(uri: str, root: str, name: str, barrier) -> None:
    barrier.wait()
    run_id = mlflow_runs.start_run(uri, "arplatform", root, name, {"a": 1}, {})
    mlflow_runs.finish_run(uri, run_id)


@pytest.mark.slow  # two processes that each import MLflow: 6–7 s of the inner loop
def test_two_first_runs_create_one_fresh_mlflow_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ctx = fork_server()
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_start_run, args=(uri, str(tmp_path), f"r{i}", barrier)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    store = mlflow_runs.client(uri)
    runs = store.search_runs([store.get_experiment_by_name("arplatform").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["r0", "r1"]
    assert all(r.info.status == "FINISHED" for r in runs)


# -- one source for each default ----------------------------------------------------------


def _values(node: dict, path="") -> dict:
    out = {}
    for key, value in node.items():
        out.update(_values(value, f"{path}{key}.") if isinstance(value, dict) else {f"{path}{key}": value})
    return out


def _required(cls) -> dict:
    """The keys of `cls` without a default (a section without one, its own), each given a value."""
    hints = typing.get_type_hints(cls)
    return {f.name: _required(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else "mnist_sample"
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_defaults_live_in_the_dataclasses_only(group):
    """Each group's base.yaml starts from its dataclass (Hydra's `<group>/schema`) and sets no
    value of its own: it names exactly the keys the dataclass leaves without a default (`???`),
    so a value is required only where there is no default to take. Every config of the group
    composes to the dataclass's defaults wherever it says nothing."""
    with open(os.path.join(CONFIG_DIR, group, "base.yaml")) as f:
        base = yaml.safe_load(f)
    assert base.pop("defaults") == ["schema", "_self_"]
    required = _required(SCHEMAS[group])
    assert _values(base) == {k: "???" for k in _values(required)}, base
    free = ("train", "space")  # a sweep's training job is composed apart; a space is any mapping
    if group == "tune":
        required["space"] = {"model": {"embed_dim": {"grid": [64]}}}
    defaults = _values({k: v for k, v in to_dict(from_dict(SCHEMAS[group], required)).items() if k not in free})
    for name in config_names(CONFIG_DIR, group):
        with open(os.path.join(CONFIG_DIR, group, f"{name}.yaml")) as f:
            said = _values({k: v for k, v in yaml.safe_load(f).items() if k != "defaults"})
        composed = _values({k: v for k, v in compose(f"{group}/{name}", []).items() if k not in free})
        assert set(composed) == set(defaults), f"{group}/{name}: keys differ {set(composed) ^ set(defaults)}"
        for key, value in composed.items():
            if not any(key == s or key.startswith(f"{s}.") for s in said):
                assert value == defaults[key], f"{group}/{name}: {key} = {value!r}, the dataclass {defaults[key]!r}"


def test_a_training_job_reads_its_codes_below_its_own_output_root(tmp_path):
    """tokenize and train with the same output_root=X: the job finds X/codebook/<name>, not
    ./experiments (an explicit data.codebook_dir still wins); the sampler sweep, X's checkpoint."""
    for name in config_names(CONFIG_DIR, "transformer"):
        job = from_dict(TrainJobConfig, compose(f"transformer/{name}", [f"output_root={tmp_path}"]))
        assert job.data.codebook_dir.startswith(f"{tmp_path}/codebook/"), (name, job.data.codebook_dir)
    job = from_dict(TrainJobConfig, compose("transformer/mnist_sample", [f"output_root={tmp_path}",
                                                                         "data.codebook_dir=/elsewhere"]))
    assert job.data.codebook_dir == "/elsewhere"
    sweep = from_dict(SamplerSweepConfig, compose("sampler_tune/mnist_sample", [f"output_root={tmp_path}"]))
    assert sweep.transformer_ckpt == f"{tmp_path}/transformer/mnist_sample/checkpoints/best.pt"


def test_hydra_refuses_unknown_keys_and_wrong_types_in_one_line(tmp_path):
    import shutil

    shutil.copytree(os.path.join(CONFIG_DIR, "transformer"), tmp_path / "transformer")
    for body, expected in (("optim:\n  lrr: 0.1\n", "optim.lrr: In 'transformer/typo'"),
                           ("optim:\n  lr: fast\n", "optim.lr: In 'transformer/typo'")):
        (tmp_path / "transformer" / "typo.yaml").write_text(
            f"# @package _global_\ndefaults:\n  - base\n  - _self_\nname: x\n{body}")
        with pytest.raises(ConfigError) as info:
            compose("transformer/typo", [], str(tmp_path))
        assert str(info.value).startswith(expected) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(ConfigError, match=r"^optim.batch_size: Error merging override optim.batch_size=1.5: Value "
                                          r"'1.5' of type 'float' could not be converted to Integer$"):
        compose("transformer/mnist_sample", ["optim.batch_size=1.5"])


def test_file_uri_roots_are_local_folders_everywhere(tmp_path):
    """`output_root=file:///dir` is the folder /dir for every stage and for MLflow's default
    store (not a folder named `file:` under the current directory)."""
    for cls in (TokenizerConfig, TrainJobConfig, PipelineConfig, SamplerSweepConfig):
        data = _required(cls) | {"output_root": f"file://{tmp_path}"}
        assert from_dict(cls, data).output_root == str(tmp_path)
    job = from_dict(TrainJobConfig, {"name": "m", "output_root": f"file://{tmp_path}"})
    assert mlflow_runs.tracking_uri(None, job.output_root) == f"sqlite:///{tmp_path}/mlflow.db"


def _publish_one(root: str, i: int) -> None:
    staging = publish.staging_dir(storage.Root(root), "m")
    for part in ("vae/checkpoints/best.pt", "codebook/codebook.pt"):
        os.makedirs(os.path.dirname(os.path.join(staging, part)), exist_ok=True)
        with open(os.path.join(staging, part), "w") as f:
            f.write(str(i))
    publish.publish(storage.Root(root), "m", staging)


def _tokenize_in_a_process(root: str, i: int) -> str:
    """One publish of version i, in a process of its own as a tokenizer run is (a live
    publisher's versions stay); the version folder it made current."""
    child = multiprocessing.get_context("fork").Process(target=_publish_one, args=(root, i))
    child.start()
    child.join()
    assert child.exitcode == 0
    return os.path.join(publish.versions_dir(root, "m"), publish.current_version(root, "m"))


def test_a_tokenizer_version_a_run_trained_on_is_never_pruned(tmp_path, capfd):
    """Tokenize, train, tokenize twice more: the first version stays, because the training run's
    run.json names its codebook (what `run_train` records, through the seed's link or not);
    versions no run names are pruned as before."""
    from arplatform.config.train_plan import DataFacts
    from arplatform.core.tokens import TokenLayout
    from arplatform.outputs import runs

    root = str(tmp_path)

    first = _tokenize_in_a_process(root, 0)
    run = runs.new_run(storage.Root(root), "tiny")
    trained_on = os.path.realpath(os.path.join(root, "codebook", "m", "codebook.pt"))  # as check_data resolves it
    facts = DataFacts(TokenLayout(4, 0), (2, 2), 4, codebook_pt=trained_on, codebook_sha256="x", vae_sha256="y")
    runs.write_state(run, **facts.identity())
    unnamed = _tokenize_in_a_process(root, 1)
    for i in (2, 3):
        _tokenize_in_a_process(root, i)
    kept = set(os.listdir(publish.versions_dir(root, "m"))) - {"current"}
    assert os.path.basename(first) in kept and os.path.basename(unnamed) not in kept and len(kept) == 3
    with open(os.path.join(first, "codebook", "codebook.pt")) as f:
        assert f.read() == "0"
    assert f"kept tokenizer version {first}: run {run.dir} trained on it" in capfd.readouterr().out


def test_a_version_a_run_under_another_root_trained_on_is_kept(tmp_path, capfd):
    """A run under root B (a sweep's train.output_root, a submitted job's own root) trained on a
    version in root A: its pin in the version keeps it through any number of tokenizes in A (N1);
    once the run is removed, its pin claims nothing and the version goes as any other."""
    from arplatform.config.train_plan import DataFacts
    from arplatform.core.tokens import TokenLayout
    from arplatform.outputs import runs

    root, other = str(tmp_path / "a"), str(tmp_path / "b")

    first = _tokenize_in_a_process(root, 0)
    run = runs.new_run(storage.Root(other), "tiny")
    trained_on = os.path.realpath(os.path.join(root, "codebook", "m", "codebook.pt"))
    facts = DataFacts(TokenLayout(4, 0), (2, 2), 4, codebook_pt=trained_on, codebook_sha256="x", vae_sha256="y")
    runs.note_tokenizer(run, facts.identity())
    for i in (1, 2, 3):
        _tokenize_in_a_process(root, i)
    assert os.path.isdir(first) and f"kept tokenizer version {first}: run {run.dir}" in capfd.readouterr().out
    shutil.rmtree(run.dir)
    for i in (4, 5):
        _tokenize_in_a_process(root, i)
    assert not os.path.exists(first)


def test_evaluate_logs_to_the_run_that_drew_the_samples_not_the_published_one(tmp_path):
    """Samples drawn from run A's checkpoint, evaluated after run B was published over the seed's
    path: the metrics go to A's MLflow run, found by the SHA-256 the manifest records (A's run.json
    records it; B, an older run, has its best.pt hashed), and nothing goes to B's. Samples of a
    checkpoint no run made go to no run."""
    import json

    from mlflow.tracking import MlflowClient

    from arplatform.core.io import file_sha256 as sha256
    from arplatform.outputs import runs
    from arplatform.stages.evaluate import log_to_training_run

    root = str(tmp_path / "root")
    uri = mlflow_runs.tracking_uri(None, root)
    ids = {}
    for name, weights in (("a", b"weights of run a"), ("b", b"weights of run b")):
        run = runs.new_run(storage.Root(root), "tiny", run_name=f"tiny-{name}")
        os.makedirs(run.checkpoint_dir)
        with open(os.path.join(run.checkpoint_dir, "best.pt"), "wb") as f:
            f.write(weights)
        ids[name] = mlflow_runs.start_run(uri, "arplatform", root, run.name, {}, {})
        extra = {"best_sha256": sha256(os.path.join(run.checkpoint_dir, "best.pt"))} if name == "a" else {}
        runs.write_state(run, tracking_uri=uri, mlflow_run_id=ids[name], **extra)
        runs.publish_best(run, storage.Root(root))  # b last: the seed's path is b's now
    seed = os.path.join(root, "transformer", "tiny", "checkpoints", "best.pt")
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "quality.json").write_text("{}")
    report = {"frechet": {"samples": 1.5}, "memorisation": {"ratio": 0.9}, "heldout_bits_per_code": 2.0}
    said = []
    drawn_by_a = sha256(os.path.join(root, "transformer", "tiny", "runs", "tiny-a", "checkpoints", "best.pt"))
    folder = storage.Location(samples)
    log_to_training_run({"checkpoint": seed, "checkpoint_sha256": drawn_by_a}, report, folder, said.append)
    client = MlflowClient(uri)
    assert client.get_run(ids["a"]).data.metrics["samples/frechet"] == 1.5
    assert "samples/frechet" not in client.get_run(ids["b"]).data.metrics
    assert said == [f"logged to MLflow run {ids['a']} ({uri})"]
    log_to_training_run({"checkpoint": seed, "checkpoint_sha256": "0" * 64}, report, folder, said.append)
    assert said[-1].startswith(f"no training run beside {seed} made the checkpoint") and len(said) == 2
    assert json.loads(open(os.path.join(root, "transformer", "tiny", "checkpoints", "published.json")).read())[
        "run_name"] == "tiny-b"


def test_an_interrupted_sweep_is_a_status_not_a_keyboard_interrupt(capsys):
    """A sweep whose trials Tune interrupted raises `Interrupted` (not a fake Ctrl-C): its run
    ends KILLED, the command says how to continue and exits 130; a real Ctrl-C does the same."""
    from arplatform.cli import exit_code
    from arplatform.core.errors import Interrupted
    from arplatform.tracking.mlflow_runs import tracked_run

    ended = []

    def sweep():
        with tracked_run(None, None, None, lambda run_id: None, ended.append):
            raise Interrupted("sweep s1 interrupted; resume=true continues it")

    def ctrl_c():
        with tracked_run(None, None, None, lambda run_id: None, ended.append):
            raise KeyboardInterrupt

    assert exit_code(sweep) == 130 and exit_code(ctrl_c) == 130
    assert ended == ["KILLED", "KILLED"]
    assert capsys.readouterr().err.splitlines() == ["interrupted: sweep s1 interrupted; resume=true continues it",
                                                   "interrupted"]


def test_ray_data_settings_of_one_run_do_not_outlive_it():
    """generate's stall timeout and actor wait are Ray Data's process-wide DataContext: set for
    its block and put back after, also when the block fails."""
    import ray.data

    from arplatform.distributed.cluster import data_context

    ctx = ray.data.DataContext.get_current()
    before = (ctx.execution_no_progress_timeout_s, ctx.wait_for_min_actors_s)
    with pytest.raises(RuntimeError), data_context(execution_no_progress_timeout_s=7.0, wait_for_min_actors_s=3):
        assert (ctx.execution_no_progress_timeout_s, ctx.wait_for_min_actors_s) == (7.0, 3)
        raise RuntimeError("a stalled run")
    assert (ctx.execution_no_progress_timeout_s, ctx.wait_for_min_actors_s) == before


def test_what_mlflow_records_of_a_run_names_no_local_path_and_says_what_made_it(tmp_path):
    """Paths go to MLflow relative to the output root, or as URIs; the source is the command; the
    training codes are named by the tokenizer version that made them."""
    from arplatform.jobs.training import tokenizer_version

    root = storage.Root(str(tmp_path / "out"))
    run_dir = tmp_path / "out" / "transformer" / "x" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    assert root.shared_name(str(run_dir)) == "transformer/x/runs/r1"
    assert root.shared_name(str(tmp_path / "elsewhere")) == f"file://{tmp_path / 'elsewhere'}"
    assert root.shared_name("s3://bucket/codes") == "s3://bucket/codes"
    bucket = storage.Root("s3://bucket/exp")
    assert bucket.shared_name(bucket.local_path("transformer", "x")) == "s3://bucket/exp/transformer/x"

    assert mlflow_runs.command_name(["/v/lib/arplatform/cli/train.py", "a=1"]) == "arplatform train"
    assert mlflow_runs.command_name(["/v/bin/arplatform", "generate", "a=1"]) == "arplatform generate"
    assert mlflow_runs.command_name(["/v/lib/arplatform/__main__.py", "tune"]) == "arplatform tune"
    assert mlflow_runs.command_name(["/v/bin/pytest", "-q"]) == "pytest"

    version = tmp_path / "out" / "tokenizers" / "mnist" / "20261206-1-abc" / "codebook"
    version.mkdir(parents=True)
    (tmp_path / "out" / "codebook").mkdir()
    os.symlink(version, tmp_path / "out" / "codebook" / "mnist")  # a published link to the version
    assert tokenizer_version(str(version / "codebook.pt")) == "mnist/20261206-1-abc"
    assert tokenizer_version(str(tmp_path / "out" / "codebook" / "mnist" / "codebook.pt")) == "mnist/20261206-1-abc"
    assert tokenizer_version(str(tmp_path / "codes" / "codebook.pt")) is None and tokenizer_version(None) is None
