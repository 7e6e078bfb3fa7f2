"""`ray job submit` against a local head on loopback with token authentication on: a sweep,
and the refusal of a submission without the token. (`test_two_nodes.py` submits the whole
pipeline, training included, to two nodes.)"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from helpers import RAY, TINY, learnable_codes, start_head, stop_process_group

from arplatform.distributed.cluster import QUIET_ENV

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def head():
    """A Ray head on 127.0.0.1 with its own token, temp dir and ports, in a process group of its
    own (`ray start` leaves its daemons in it); that group is stopped afterwards. One for the
    module: its tests do not touch each other's state (a submitted job, a refused listing)."""
    tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        group, join, address = start_head(tmp, 2, dict(os.environ))
        try:
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | join
            env.pop("RAY_ADDRESS")  # `ray job` talks to the jobs API at `address`
            yield env, address, tmp
        finally:
            stop_process_group(group)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_job_submit_runs_a_sweep(head, tmp_path):
    """A one-trial sweep submitted as a job: the trial's Ray Train run starts on the job's cluster."""
    env, address, _ = head
    data = learnable_codes(tmp_path / "codes", n=160)
    out = tmp_path / "out"
    sid = f"arplatform-tune-{int(time.time())}"
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--submission-id", sid, "--working-dir", REPO, "--",
         sys.executable, "-m", "arplatform", "tune", "--config-name", "tune/mnist_sample", "~space",
         "+space={model: {embed_dim: {grid: [16]}}}", "search.num_samples=1", "asha.enabled=false",
         f"train.output_root={out}", f"train.data.codebook_dir={data}", "train.optim.epochs=2",
         "train.trainer.cpus_per_worker=0.25", *[f"train.{o}" for o in TINY]],
        env=env, capture_output=True, text=True, timeout=600)
    status = subprocess.run([RAY, "job", "status", "--address", address, sid], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "succeeded" in status.stdout.lower(), submit.stdout[-3000:] + submit.stderr[-3000:]
    (sweep,) = os.listdir(out / "tune")
    assert (out / "tune" / sweep / "best.yaml").exists() and "| 1 |" in submit.stdout


def test_job_submit_without_token_is_refused(head):
    env, address, tmp = head
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run([RAY, "job", "list", "--address", address], env=no_token, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "Unauthorized" in proc.stdout + proc.stderr


# Run in a fresh process: start a local cluster the way every command does, then list the TCP
# sockets its processes listen on (from /proc: the process tree, its socket inodes, the tables).
COUNT_LISTENERS = r"""
import json, os
from arplatform.distributed.cluster import QUIET_ENV, init_ray

def tree(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except OSError:
            pass
    out, todo = [], [root]
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], []))
    return out

def inodes(pids):
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        found.update(link[8:-1] for link in links if link.startswith("socket:["))
    return found

before = {k: os.environ.get(k) for k in QUIET_ENV}
ray = init_ray(num_cpus=1)
mine = inodes(tree(os.getpid()))
listening = [f[1] for table in ("/proc/net/tcp", "/proc/net/tcp6") for f in map(str.split, open(table).readlines()[1:])
             if f[3] == "0A" and f[9] in mine]
node = ray.nodes()[0]
worker_env = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in QUIET_ENV}).remote())
print(json.dumps({"listening": [[a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1], 16)] for a in listening],
                  "metrics_port": node["MetricsExportPort"], "dashboard": ray.get_runtime_context().gcs_address,
                  "env": {"before": before, "driver": {k: os.environ.get(k) for k in QUIET_ENV},
                          "worker": worker_env}}))
ray.shutdown()
"""


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="counts sockets through Linux's /proc")
def test_a_local_cluster_opens_few_ports_and_no_metrics_endpoint():
    """A command's local cluster exports no metrics (no Prometheus endpoint answering without a
    token): with Ray's default it listens on 13 ports, one of them the metrics export port; with
    the platform's, 12, and none of them that port. ARPLATFORM_RAY_METRICS=1 turns export back on.
    The quiet settings reach the cluster's workers through the job's runtime_env and leave the
    command's own environment as it was."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ARPLATFORM_RAY_METRICS")}
    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        proc = subprocess.run([sys.executable, "-c", COUNT_LISTENERS], env=env | {"TMPDIR": tmp},
                              capture_output=True, text=True, timeout=300, cwd=REPO)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    ports = [port for _, port in found["listening"]]
    assert found["metrics_port"] in (-1, 0, None) or found["metrics_port"] not in ports, found
    assert 0 < len(ports) <= 12, found
    env = found["env"]
    assert env["driver"] == env["before"]
    assert env["worker"] == {k: env["before"][k] or v for k, v in QUIET_ENV.items()}, env
