"""minialex: a small deep-learning engine in plain NumPy (and CuPy), written to be read.

    from minialex import backend, layers, models, optimizers
    model = models.alexnet_mnist()
"""
from . import backend, layers, losses, models, optimizers, random
from .backend import get_backend, set_backend
from .random import set_seed
from .models import Sequential, alexnet_mnist

__version__ = "0.1.0"
__all__ = ["Sequential", "alexnet_mnist", "backend", "get_backend", "layers", "losses", "models",
           "optimizers", "random", "set_backend", "set_seed"]
