"""Train the tutorial's small AlexNet on MNIST with minialex: the Keras notebook, line for line.

    python examples/train_mnist.py                    # 5 epochs, batch 64, Adam 1e-3, as the notebook
    python examples/train_mnist.py --backend cupy     # on an NVIDIA GPU
    python examples/train_mnist.py --help             # every option

The steps live in minialex/train_mnist.py; this file only starts them.
"""
import sys

from minialex.train_mnist import main

if __name__ == "__main__":
    sys.exit(main())
