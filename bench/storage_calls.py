"""How often one training job's driver enters `storage.py`: the count that tells whether
output roots and URIs are resolved at the edge (once, where the stage starts) or everywhere.

    cd bench && ../.venv/bin/python storage_calls.py     # a tiny job on a local root, 1 worker

It counts calls into `arplatform/outputs/storage.py` from outside it (a call inside the module is
not an entry), by function, in the driver process only, on a code set it writes itself.
`Root.__init__` is how many times the output root was resolved.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile

import numpy as np
import torch
from machine import machine_line, save

from arplatform.core.codebook import save_codebook

TINY = ["model.embed_dim=32", "model.num_layers=1", "model.num_heads=2", "optim.batch_size=16",
        "optim.epochs=1", "sample.num_samples=4", "trainer.num_workers=1"]


def code_set(folder: str, rows: int = 320, k: int = 16, classes: int = 4) -> str:
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    for prefix, n in (("", rows), ("val_", rows // 4)):
        np.save(os.path.join(folder, f"{prefix}codes.npy"), rng.integers(0, k, (n, 16)).astype(np.int32))
        np.save(os.path.join(folder, f"{prefix}labels.npy"), rng.integers(0, classes, n).astype(np.int64))
    save_codebook(os.path.join(folder, "codebook.pt"), torch.randn(k, 4),
                  {"num_codes": k, "num_classes": classes, "grid": [4, 4]})
    return folder


def main() -> None:
    from arplatform.cli.train import main as train

    print(machine_line())
    tmp = tempfile.mkdtemp(prefix="storage-calls-")
    data = code_set(os.path.join(tmp, "data"))
    entries = collections.Counter()

    def count(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith(os.path.join("outputs", "storage.py")):
            caller = frame.f_back.f_code.co_filename if frame.f_back else ""
            if not caller.endswith(os.path.join("outputs", "storage.py")):
                entries[frame.f_code.co_qualname] += 1

    sys.setprofile(count)
    try:
        rc = train(["--config-name", "transformer/mnist_sample", f"output_root={tmp}/out",
                    f"data.codebook_dir={data}", *TINY])
    finally:
        sys.setprofile(None)
    total = sum(entries.values())
    print(f"exit {rc}: the driver entered storage.py {total} times; the output root resolved "
          f"{entries['Root.__init__']} time(s); other handles made {entries['Location.__init__']} time(s)")
    for name, n in entries.most_common():
        print(f"  {n:>4}  {name}")
    print("saved", save("storage_calls", {"entries": total, "by_function": dict(entries)}))


if __name__ == "__main__":
    main()
