"""The seeded CPU weights hash: the check that a change left the CPU's arithmetic bit for bit as it was.

    python benchmarks/weights_hash.py [--images 2000] [--validation-split 0.2]

Trains the tutorial network for one epoch on the first ``--images`` MNIST training images (seed 0,
batch 64, Adam 1e-3, the notebook's preprocessing) and prints the first 16 hex digits of the SHA-256
of every weight's bytes, in ``get_weights()`` order: ``RESULT weights_hash=...``. Run it before and
after a change, with ``OMP_NUM_THREADS=1`` and ``=2`` (the same on both is the data-parallel step's
promise). On 7 December 2026 (AMD EPYC Zen 3): d5ef9999c47fafa7 at the defaults, 1dffc2c58700f28c
with ``--validation-split 0`` (its last batch of 16 rows), on 1 and 2 threads.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from minialex import random  # noqa: E402
from minialex.data import load_mnist, preprocess_images, to_categorical  # noqa: E402
from minialex.models import alexnet_mnist  # noqa: E402
from minialex.optimizers import Adam  # noqa: E402


def weights_hash(images=2000, validation_split=0.2, data_dir=common.DATA_DIR):
    """The first 16 hex digits of the SHA-256 of the weights after the seeded epoch."""
    (x, y), _ = load_mnist(data_dir, progress=False, mirrors=[])
    x, y = preprocess_images(x[:images]), to_categorical(y[:images], 10)
    random.set_seed(0)
    model = alexnet_mnist()
    model.compile(optimizer=Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=64, validation_split=validation_split, verbose=0)
    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:16]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--data-dir", default=common.DATA_DIR)
    args = parser.parse_args(argv)
    print(f"RESULT weights_hash={weights_hash(args.images, args.validation_split, args.data_dir)}")


if __name__ == "__main__":
    main()
