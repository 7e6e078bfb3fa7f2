"""Shared by the Ray tests: a small learnable code set, a way to run the training job, and
Ray heads of a test's own (started with `ray start`, stopped by their process group)."""

import os
import re
import secrets
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from arplatform.core.codebook import save_codebook
from arplatform.distributed.cluster import free_port  # noqa: F401 (the tests' helper too)

TINY = ["model.embed_dim=32", "model.num_layers=1", "model.num_heads=2", "model.dropout=0.0",
        "optim.batch_size=16", "optim.lr=0.01", "optim.warmup_steps=2", "optim.log_every=10",
        "sample.num_samples=8", "trainer.num_workers=2"]


def learnable_codes(folder, n=320, k=16, classes=4, seed=0, vae=False):
    """4×4 grids whose codes follow the class and position, with 10 % noise: a GPT can learn them."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for prefix, rows in (("", n), ("val_", n // 4)):
        labels = rng.integers(0, classes, rows)
        codes = (labels[:, None] * 3 + np.arange(16)[None, :]) % k
        noise = rng.random(codes.shape) < 0.1
        codes[noise] = rng.integers(0, k, noise.sum())
        np.save(os.path.join(folder, f"{prefix}codes.npy"), codes.astype(np.int32))
        np.save(os.path.join(folder, f"{prefix}labels.npy"), labels.astype(np.int64))
    meta = {"num_codes": k, "num_classes": classes, "grid": [4, 4]}
    if vae:  # a VAE the codebook names: the codes decode to 16×16 images (an MLflow model is logged)
        from arplatform.core.checkpoint import save_checkpoint
        from arplatform.core.vae import VAE, VAEConfig

        save_checkpoint(os.path.join(folder, "vae.pt"), VAE(VAEConfig(1, 16, 4, 8)), kind="vae")
        meta["vae_checkpoint"] = "vae.pt"
    save_codebook(os.path.join(folder, "codebook.pt"), torch.randn(k, 4), meta)
    return str(folder)


def scene(rng, size=(24, 20)):
    """A small colour picture with edges and texture (not a flat block)."""
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.5 + 0.5 * np.sin(rng.uniform(0.3, 1.2) * xx + rng.uniform(0, 6) + yy * rng.uniform(-0.5, 0.5))
    pixels = stripes[..., None] * rng.uniform(0.2, 1, 3) + rng.normal(0, 0.05, (h, w, 3))
    pixels[h // 3 : h // 2, w // 4 : w // 2] = rng.uniform(0, 1, 3)  # a block with sharp edges
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def bad_folder(root, good=24):
    """Readable non-square RGB and grey scenes in two classes, and beside them a corrupt file, a
    truncated PNG, an image over max_pixels, an unreadable 16-bit one and a link leaving the folder."""
    import os

    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(good):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(scene(rng))
        (picture.convert("L") if i % 5 == 0 else picture).save(folder / f"{i:03d}.png")  # grey ones converted
    (root / "a" / "corrupt.png").write_bytes(rng.bytes(300))
    whole = (root / "a" / "000.png").read_bytes() if (root / "a" / "000.png").exists() else \
        (root / "a" / "001.png").read_bytes()
    (root / "a" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(root / "b" / "huge.png")  # over max_pixels=5000
    (root.parent / "outside.png").write_bytes(whole)
    os.symlink(root.parent / "outside.png", root / "b" / "link.png")
    return root


def photo_crops(root, n=600, size=32, seed=0):
    """`n` crops of 1-3× `size` px cut at random from the two photographs scikit-learn ships
    (a temple, a flower), resized to size×size: real photographic texture and colour, made here.
    Four classes: the left and right halves of each photograph."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    for i in range(n):
        photo = photos[i % 2]
        h, w, _ = photo.shape
        side = int(rng.integers(size, 3 * size + 1))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        folder = os.path.join(root, f"class{2 * (i % 2) + int(x + side / 2 > w / 2)}")
        os.makedirs(folder, exist_ok=True)
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BICUBIC)
        crop.save(os.path.join(folder, f"{i:05d}.png"))
    return str(root)


def job_env(cluster=None):
    """The environment of a platform command in a test: this process's, without a tracking
    store or a Ray address of the user's; with `cluster` (the `ray_cluster` fixture) the
    command joins that cluster instead of starting one of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | (cluster or {})


def run_train(root, data, *overrides, timeout=300, popen=None, cluster=None):
    """Run the job to completion (CompletedProcess), or start it (Popen) when popen is a dict of Popen options.
    With `cluster` the job joins the suite's shared Ray cluster; without, it starts its own."""
    cmd = [sys.executable, "-m", "arplatform", "train", "--config-name", "transformer/mnist_sample",
           f"output_root={root}", f"data.codebook_dir={data}", *TINY, *overrides]
    env = job_env(cluster)
    if popen is not None:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def run_main(main, argv) -> tuple[int, str]:
    """A command's `main(argv)` in this process: (exit code, stderr), an exit through SystemExit
    (argparse's) included; its stdout is dropped. The SIGTERM handler a command installs for
    itself is put back."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    saved, err = signal.getsignal(signal.SIGTERM), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, saved)
    return code, err.getvalue()


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `pid`, read from /proc."""
    parents, args = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone in between
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += [(p, args.get(p, "")) for p in children]
        frontier = children
    return found


def stop_process_group(*pgids: int, grace: float = 3.0) -> None:
    """Stop every process of the groups `pgids` (this test's own clusters), all at once, never
    Ray's stop command, which walks the whole machine and kills anyone's Ray."""

    def alive(pgid):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False

    left = list(pgids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in left:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and (left := [g for g in left if alive(g)]):
            time.sleep(0.2)
        if not left:
            return


RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def node_ports() -> list[str]:
    """Ports of a node's daemons, chosen here so that two clusters on one machine never meet."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


def start_head(tmp: str, num_cpus: int, env: dict, *extra: str) -> tuple[int, dict, str]:
    """`ray start --head` on loopback with its own token, temp dir and ports, in a process group
    of its own. Returns that group, the environment that joins the head (RAY_ADDRESS and the
    token), and the jobs API address."""
    token = os.path.join(tmp, "auth_token")
    with open(token, "w") as f:
        f.write(secrets.token_hex(32))
    gcs, dash = free_port(), free_port()
    join = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token}
    # the head's workers find their own cluster's state API, whatever else runs on the machine
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"} | join | {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash}"}
    head = subprocess.Popen([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--num-cpus={num_cpus}",
                             f"--temp-dir={tmp}/r", "--disable-usage-stats", *node_ports(), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert head.wait(timeout=120) == 0, "ray start --head failed"
    except BaseException:
        stop_process_group(head.pid)
        raise
    return head.pid, join | {"RAY_ADDRESS": f"127.0.0.1:{gcs}"}, f"http://127.0.0.1:{dash}"


def tracebacks(out: str) -> list[str]:
    """The tracebacks in a job's output, but the one Ray Train's controller logs when its
    autoscaling request times out on a loaded machine ("Failed to send resource request … it's
    safe to ignore this error"): Ray's own transient notice, not a failure of the job."""
    found, skipping = [], None
    for line in out.splitlines():
        actor = re.search(r"\((\w+ pid=\d+)\)", line)
        if "Failed to send resource request" in line and actor:
            skipping = actor.group(1)
        elif skipping and actor and actor.group(1) == skipping:
            if "GetTimeoutError" in line:
                skipping = None
        elif "Traceback" in line:
            found.append(line)
    return found
