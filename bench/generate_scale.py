"""50,000 samples, the field's count for FID, from the main job's checkpoint, as a user runs it:
`python -m arplatform generate num_samples=50000 format=npz` (one array per batch, no PNG per
image), once with each engine (this process; Ray Data actors), each in a fresh process. Then
the cost of a kill: the local engine started again into a new folder, killed (SIGKILL of its
process group) once half its batches are written, and rerun to the end; its samples.npz must be
the clean run's byte for byte in every array.

Prints per run: wall time, images/s, the command process's peak RSS (VmHWM, from /proc; the
Ray actors are other processes), and samples.npz's size; then the resume's extra seconds.

    cd bench && ../.venv/bin/python generate_scale.py [--checkpoint …/best.pt] [--num_samples 50000]
                                                     [--engines local ray] [--no-resume]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import machine_line, save
from scale import peak_rss_mib


def command(ckpt: str, n: int, engine: str, out: str, batch: int) -> list[str]:
    return [sys.executable, "-m", "arplatform", "generate", f"transformer_ckpt={ckpt}", f"num_samples={n}",
            f"engine={engine}", "format=npz", f"batch_size={batch}", f"out={out}"]


def run(cmd: list[str], kill_at_batches: int | None = None, out: str | None = None) -> dict:
    """The command in a fresh process group; its wall time and peak RSS. With `kill_at_batches`,
    SIGKILLed once that many batches are written (their index files)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mib(proc.pid) or 0.0)
        if kill_at_batches and os.path.isdir(os.path.join(out, "codes")) and sum(
                name.startswith("index-") for name in os.listdir(os.path.join(out, "codes"))) >= kill_at_batches:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(peak, 1), "killed": True}
        time.sleep(0.2)
    text = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(peak, 1)}


def same_samples(a: str, b: str) -> bool:
    with np.load(os.path.join(a, "samples.npz")) as x, np.load(os.path.join(b, "samples.npz")) as y:
        return sorted(x.files) == sorted(y.files) and all(np.array_equal(x[k], y[k]) for k in x.files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="experiments/transformer/mnist_sample/checkpoints/best.pt")
    p.add_argument("--num_samples", type=int, default=50_000)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    p.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume run")
    args = p.parse_args()
    ckpt, n = os.path.abspath(args.checkpoint), args.num_samples
    print(machine_line(), flush=True)
    figures = {"num_samples": n, "batch_size": args.batch_size, "runs": []}
    with tempfile.TemporaryDirectory() as root:
        for engine in args.engines:
            out = os.path.join(root, engine)
            r = {"engine": engine, **run(command(ckpt, n, engine, out, args.batch_size))}
            r["images_per_s"] = round(n / r["wall_s"], 1)
            r["samples_npz_mib"] = round(os.path.getsize(os.path.join(out, "samples.npz")) / 2**20, 1)
            figures["runs"].append(r)
            print(f"{engine:5s} {n:,} samples: {r['wall_s']:.0f} s, {r['images_per_s']:.0f} images/s, command "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB, samples.npz {r['samples_npz_mib']:.0f} MiB", flush=True)
        if not args.no_resume and "local" in args.engines:
            out = os.path.join(root, "resumed")
            half = n // args.batch_size // 2
            killed = run(command(ckpt, n, "local", out, args.batch_size), kill_at_batches=half, out=out)
            resumed = run(command(ckpt, n, "local", out, args.batch_size))
            clean = next(r for r in figures["runs"] if r["engine"] == "local")
            exact = same_samples(out, os.path.join(root, "local"))
            figures["resume"] = {"killed_after_s": killed["wall_s"], "resumed_s": resumed["wall_s"],
                                 "extra_s": round(killed["wall_s"] + resumed["wall_s"] - clean["wall_s"], 1),
                                 "resumed_peak_rss_mib": resumed["peak_rss_mib"], "exact": exact}
            print(f"resume: killed after {killed['wall_s']:.0f} s ({half} batches written), rerun "
                  f"{resumed['wall_s']:.0f} s; {figures['resume']['extra_s']:+.0f} s against the clean run; "
                  f"samples.npz {'identical' if exact else 'DIFFERENT'}", flush=True)
            if not exact:
                sys.exit(1)
    print(f"saved {save('generate_scale', figures)}")


if __name__ == "__main__":
    main()
