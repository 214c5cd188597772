"""The tutorial network in PyTorch, the reference the benchmarks hold minialex against.

PyTorch's own layers, NCHW as PyTorch likes it, its LRN set to TensorFlow's semantics
(``LocalResponseNorm(size=5, alpha=5 * 2e-5, beta=0.75, k=1.0)``), Adam with Keras's epsilon.
One block per minialex layer (a Conv2D with activation='relu' is Conv2d + ReLU), so layers can be
compared one to one. Import this module only where torch is installed.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn


def blocks():
    """[(minialex layer name, PyTorch module, NCHW input shape without the batch)], in order."""
    lrn = dict(size=5, alpha=5 * 2e-5, beta=0.75, k=1.0)
    return [
        ("conv2d", nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU()), (1, 32, 32)),
        ("local_response_norm", nn.LocalResponseNorm(**lrn), (32, 30, 30)),
        ("max_pool2d", nn.MaxPool2d(2), (32, 30, 30)),
        ("conv2d_1", nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()), (32, 15, 15)),
        ("local_response_norm_1", nn.LocalResponseNorm(**lrn), (64, 15, 15)),
        ("max_pool2d_1", nn.MaxPool2d(2), (64, 15, 15)),
        ("conv2d_2", nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU()), (64, 7, 7)),
        ("conv2d_3", nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU()), (128, 7, 7)),
        ("conv2d_4", nn.Sequential(nn.Conv2d(128, 64, 3, padding=1), nn.ReLU()), (128, 7, 7)),
        ("flatten", nn.Flatten(), (64, 7, 7)),
        ("dense", nn.Sequential(nn.Linear(3136, 84), nn.ReLU()), (3136,)),
        ("dropout", nn.Dropout(0.5), (84,)),
        ("dense_1", nn.Sequential(nn.Linear(84, 84), nn.ReLU()), (84,)),
        ("dropout_1", nn.Dropout(0.5), (84,)),
        ("dense_2", nn.Linear(84, 10), (84,)),
    ]


class Reference:
    """The whole network, a training step and inference, on ``device`` ('cpu' or 'cuda').

    On a GPU, TF32 is switched off (``tf32=False``) so that PyTorch's matrix products and convolutions
    compute in float32, as minialex's do (CuPy uses TF32 only under ``CUPY_TF32=1``).
    """

    def __init__(self, batch=64, device="cpu", seed=0, tf32=False, x=None, y=None):
        """``x`` (N, H, W, C) and one-hot ``y``: the batch to train on (NumPy arrays, as minialex takes
        them); random ones of ``batch`` samples if not given."""
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.tf32 = tf32
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
        self.named_blocks = [(name, module.to(self.device), shape) for name, module, shape in blocks()]
        self.model = nn.Sequential(*[module for _, module, _ in self.named_blocks])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)
        self.loss = nn.CrossEntropyLoss()
        if x is None:
            generator = torch.Generator().manual_seed(seed)
            self.x = torch.rand(batch, 1, 32, 32, generator=generator).to(self.device)
            self.y = torch.randint(0, 10, (batch,), generator=generator).to(self.device)
        else:
            self.x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(self.device)
            self.y = torch.from_numpy(y.argmax(axis=1)).to(self.device)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(self):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def predict(self, x):
        self.model.eval()
        with torch.no_grad():
            return self.model(x)

    def layer_functions(self, name, shape, batch):
        """(forward, forward + backward) closures for one block at its real input shape."""
        module = dict((n, m) for n, m, _ in self.named_blocks)[name]
        x = torch.rand((batch,) + shape, device=self.device, requires_grad=name != "conv2d")
        module.train()
        with torch.no_grad():
            out_shape = module(x).shape
        grad = torch.rand(out_shape, device=self.device)

        def forward():
            with torch.no_grad():
                module(x)

        def forward_backward():
            module(x).backward(grad)

        return forward, forward_backward


def graphed_step(reference):
    """The whole training step on a copy of the reference's network captured as one CUDA graph (forward,
    loss, backward, Adam with ``capturable=True``), on the batch in fixed tensors: PyTorch's recipe
    (three warm-up steps on a side stream, the gradients set to None before the capture). Returns the
    graph's ``replay``."""
    model = copy.deepcopy(reference.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, capturable=True)
    loss, x, y = nn.CrossEntropyLoss(), reference.x.clone(), reference.y.clone()
    model.train()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss(model(x), y).backward()
        optimizer.step()
    return graph.replay


def compiled_step(reference, warmup=3):
    """(the training step of a copy of the reference's network through ``torch.compile(mode='reduce-overhead')``
    (Inductor's kernels, replayed as CUDA graphs), the seconds its first ``warmup`` calls took: the compile)."""
    model = copy.deepcopy(reference.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss, compiled = nn.CrossEntropyLoss(), torch.compile(model, mode="reduce-overhead")
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss(compiled(reference.x), reference.y).backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    reference.synchronize()
    return step, time.perf_counter() - start
