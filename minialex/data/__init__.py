"""Datasets and preprocessing: MNIST / Fashion-MNIST loaders, an IDX reader, the tutorial's transforms.

    from minialex.data import load_mnist, preprocess_images, to_categorical
    (x_train, y_train), (x_test, y_test) = load_mnist()      # uint8, as keras.datasets.mnist
    x_train = preprocess_images(x_train)                      # float32 (60000, 32, 32, 1) in [0, 1]
    y_train = to_categorical(y_train, 10)                     # float32 (60000, 10)

This is host-side I/O, so it uses NumPy whatever the active backend.
"""
from .idx import decompress, format_idx, parse_idx, read_idx
from .mnist import (DatasetUnavailableError, default_cache_dir, default_keras_dir, fetch,
                    load_fashion_mnist, load_mnist)
from .preprocessing import pad_images, preprocess_images, to_categorical

__all__ = ["DatasetUnavailableError", "decompress", "default_cache_dir", "default_keras_dir", "fetch",
           "format_idx", "load_fashion_mnist", "load_mnist", "pad_images", "parse_idx",
           "preprocess_images", "read_idx", "to_categorical"]
