"""The layers, one family per file; each file is its formula, ``forward``, then ``backward``."""
from .activations import ReLU, Softmax
from .base import Layer
from .batchnorm import BatchNormalization
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .lrn import LocalResponseNorm, caffe_to_tf, tf_to_caffe
from .pool import MaxPool2D
from .reshape import Flatten

__all__ = ["BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten", "Layer", "LocalResponseNorm", "MaxPool2D",
           "ReLU", "Softmax", "caffe_to_tf", "tf_to_caffe"]
