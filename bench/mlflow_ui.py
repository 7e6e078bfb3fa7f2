"""What a user sees in MLflow's own UI after a main job, checked in a real browser.

Starts `mlflow server` on 127.0.0.1 (a free port) against a finished job's store, opens three
pages in headless Chromium (the training run, the experiment's models tab, the registered
model) and checks the rendered text for the logged model, the training dataset, the source
commit and the registered version. Saves a screenshot of each page.

    .venv/bin/python bench/mlflow_ui.py [--root experiments] [--out docs/mlflow]

The store must hold a finished training run with a logged model; run the main job first
(`python3 tasks.py demo`, or `python -m arplatform pipeline --config-name pipeline/digits
'train_overrides=["tracking.register=true"]'` for a registered version in a few minutes).
Exits 1 when a check fails, naming it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from arplatform.distributed.cluster import free_port


def start_server(store: str, port: int, log_path: str) -> subprocess.Popen:
    """`mlflow server` on loopback, in a process group of its own (stopped by `stop`)."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{store}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    stop(proc)
    sys.exit(f"mlflow server did not start; its log: {log_path}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass


def render(url: str, screenshot: str, profile: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium), and a screenshot of it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        sys.exit("no Chromium here (apt install chromium): the check needs a real browser")
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--window-size=1500,1100"]
    subprocess.run(common + [f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=False)
    out = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=180, check=False)
    return out.stdout


def what_to_find(store: str) -> dict:
    """The newest logged model in the store, the run that made it, its dataset and its versions."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiments = client.search_experiments()
    models = client.search_logged_models(experiment_ids=[e.experiment_id for e in experiments],
                                         order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    if not models:
        sys.exit(f"{store}: no logged model; run the main job first")
    model = models[0]
    run = client.get_run(model.source_run_id)
    versions = [v for v in client.search_model_versions() if v.source == f"models:/{model.model_id}"]
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return {"model": model, "run": run, "dataset": inputs[0].dataset.name if inputs else None,
            "version": versions[0] if versions else None,
            "kind": client.get_experiment(model.experiment_id).tags.get("mlflow.experimentKind")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="experiments", help="the output root whose mlflow.db to open")
    parser.add_argument("--out", default=os.path.join("docs", "mlflow"), help="where the screenshots go")
    args = parser.parse_args()
    store = os.path.abspath(os.path.join(args.root, "mlflow.db"))
    if not os.path.exists(store):
        sys.exit(f"{store}: no MLflow store; run the main job first")
    found = what_to_find(store)
    run, model, version = found["run"], found["model"], found["version"]
    port = free_port()
    os.makedirs(args.out, exist_ok=True)
    base = f"http://127.0.0.1:{port}/#"
    # workflowType: MLflow 3.17's UI keeps the GenAI/ML switch per browser; the platform's links
    # name the model-training view (the experiment's mlflow.experimentKind tag says the same)
    pages = {"run": f"{base}/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning",
             "models": f"{base}/experiments/{run.info.experiment_id}/models?workflowType=machine_learning"}
    if version is not None:
        pages["registered"] = f"{base}/models/{version.name}/versions/{version.version}?workflowType=machine_learning"
    expected = {"run": [model.name, found["dataset"], "Logged models", run.data.tags.get("mlflow.source.git.commit",
                                                                                         "")[:7]],
                "models": [model.name, model.model_id[:10]],
                "registered": [f"Version {version.version}" if version else ""]}
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(store, port, os.path.join(tmp, "server.log"))
        try:
            for page, url in pages.items():
                shot = os.path.join(args.out, f"{page}.png")
                dom = render(url, shot, os.path.join(tmp, "profile"))
                wanted = [text for text in expected[page] if text]
                missing = [text for text in wanted if text not in dom]
                seen = f"MISSING {missing!r}" if missing else "found " + ", ".join(repr(t) for t in wanted)
                print(f"{page:10s} {url}\n           screenshot {shot}; {seen}")
                failures += [f"{page}: {text!r}" for text in missing]
        finally:
            stop(proc)
    print(f"experiment kind: {found['kind']}; logged model {model.model_id} of run {run.info.run_id}; dataset "
          f"{found['dataset']!r}; registered {f'{version.name}/{version.version}' if version else 'no version'}")
    if failures or found["kind"] != "custom_model_development" or not found["dataset"]:
        print("FAILED: " + "; ".join(failures or ["the experiment's kind or the dataset"]))
        return 1
    print("every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
