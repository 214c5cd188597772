"""Optimisers: update parameters in place, on whatever backend they live.

``apply(params, grads)`` takes two lists of arrays (Sequential passes one flat buffer of every
parameter and one of every gradient); ``get_state`` / ``set_state`` save and restore the step count
and the slots (momenta), so a resumed run continues exactly.

SGD (Keras):   velocity = momentum * velocity - lr * g;   p += velocity      (p -= lr * g if momentum = 0)
Adam (Keras, Kingma & Ba with epsilon outside the square root), at step t = 1, 2, ...:
    m = m + (1 - beta_1) * (g - m)         v = v + (1 - beta_2) * (g^2 - v)
    alpha_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    p = p - alpha_t * m / (sqrt(v) + epsilon)
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager

from . import backend, kernels


def hyperparameter(name, value, within, description, why=""):
    """``value`` as a float if it is a real number (Python's or NumPy's, not a bool) for which ``within`` holds;
    else a ValueError: ``name`` must be ``description`` (``why``: what goes wrong otherwise)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and within(float(value)):
        return float(value)
    raise ValueError(f"{name} must be {description}, got {value!r}{why}")


POSITIVE = "a positive finite number"


def positive(value):
    return 0.0 < value < float("inf")


def fraction(value):
    return 0.0 <= value < 1.0


class Optimizer:
    slot_names: tuple = ()
    #: True where ``update`` reads what changes per step from the step's values (``reading``): such an
    #: optimiser's step can be captured as a CUDA graph (``minialex.graphs``)
    reads_step_values = False

    def __init__(self, learning_rate):
        self.learning_rate = hyperparameter("learning_rate", learning_rate, positive, POSITIVE)
        self.iterations = 0
        self.slots: dict[str, list] = {name: [] for name in self.slot_names}
        self.values = None

    @contextmanager
    def reading(self, values):
        """Within the block, updates read their per-step numbers from ``values`` (a
        ``minialex.step_values.StepValues`` that the caller filled with ``write_step_values`` for update
        number ``iterations + 1`` and copied to the device) instead of taking them as arguments."""
        self.values = values
        try:
            yield
        finally:
            self.values = None

    def write_step_values(self, values, t):
        """Write what update number ``t`` reads into ``values``."""
        values["iteration"], values["learning_rate"] = t, self.learning_rate

    def state_arrays(self) -> list:
        """The arrays an update reads or writes besides the parameters and gradients (its slots)."""
        return [array for arrays in self.slots.values() for array in arrays]

    def apply(self, params, grads):
        """One update of every parameter from its gradient (lists of arrays, in the same order)."""
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameters but {len(grads)} gradients")
        for name in self.slot_names:
            if not self.slots[name]:
                self.slots[name] = [backend.get_array_module(p).zeros_like(p) for p in params]
        self.iterations += 1
        for index, (param, grad) in enumerate(zip(params, grads)):
            self.update(index, param, grad)

    def update(self, index, param, grad):
        raise NotImplementedError

    def check_fits(self, params) -> None:
        """Raise a ValueError unless the state kept so far (none before the first step) is for ``params``:
        an optimiser keeps the state of one model's weights."""
        for name, arrays in self.slots.items():
            if arrays and [a.shape for a in arrays] != [p.shape for p in params]:
                kept = sum(int(a.size) for a in arrays)
                raise ValueError(f"the optimizer keeps its state ({name}) for {kept:,} weights, the model has "
                                 f"{sum(int(p.size) for p in params):,}: it was used with another model, or the model "
                                 f"changed since; compile the model with a new optimizer (e.g. Adam(...))")

    def get_state(self) -> dict:
        """{'iterations': int, 'slot/i': array copy, ...}: everything a resumed run needs."""
        state = {"iterations": self.iterations}
        for name, arrays in self.slots.items():
            state.update({f"{name}/{i}": a.copy() for i, a in enumerate(arrays)})
        return state

    def check_state(self, state: dict, params=None) -> None:
        """Raise a ValueError unless ``state`` is one of this optimiser's (matching ``params``' shapes if given)."""
        iterations = state.get("iterations")
        if isinstance(iterations, bool) or not hasattr(iterations, "__index__") or iterations < 0:
            raise ValueError(f"optimizer state: iterations must be a non-negative int, got {iterations!r}")
        names = {key.split("/")[0] for key in state if key != "iterations"}
        if names - set(self.slot_names):
            raise ValueError(f"optimizer state: slots {sorted(names - set(self.slot_names))} do not belong to "
                             f"{type(self).__name__} (slots: {list(self.slot_names)})")
        counts = {name: sum(1 for key in state if key.startswith(name + "/")) for name in self.slot_names}
        for name, count in counts.items():
            expected = len(params) if params is not None and (count or iterations) else count
            if count != expected or any(f"{name}/{i}" not in state for i in range(count)):
                raise ValueError(f"optimizer state: slot {name!r} holds {count} arrays, expected {expected}")
            for i in range(count):
                shape = tuple(getattr(state[f"{name}/{i}"], "shape", ()))
                if getattr(getattr(state[f"{name}/{i}"], "dtype", None), "kind", None) != "f":
                    raise ValueError(f"optimizer state: {name}/{i} is not an array of floats")
                if params is not None and shape != tuple(params[i].shape):
                    raise ValueError(f"optimizer state: {name}/{i} has shape {shape}, the parameters "
                                     f"{tuple(params[i].shape)}")

    def set_state(self, state: dict, params=None) -> None:
        """Restore ``get_state()``'s dict; it is checked (against ``params``, if given) before anything changes."""
        self.check_state(state, params)
        self.iterations = int(state["iterations"])
        for name in self.slot_names:
            count = sum(1 for key in state if key.startswith(name + "/"))
            self.slots[name] = [backend.to_device(state[f"{name}/{i}"]) for i in range(count)]


class SGD(Optimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0):
        self.momentum = hyperparameter("momentum", momentum, fraction, "in [0, 1)")
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(learning_rate)

    def update(self, index, param, grad):
        if not self.momentum:
            param -= self.learning_rate * grad
            return
        velocity = self.slots["velocity"][index]
        velocity *= self.momentum
        velocity -= self.learning_rate * grad
        param += velocity


@kernels.gpu(kernels.adam_cuda)
def adam(param, grad, m, v, scratch, alpha, beta_1, beta_2, epsilon):
    """One Adam step in place, the formulas above written through one ``scratch`` array of param's
    shape (no temporaries). ``alpha``: alpha_t, a number, or the 0-d float64 array of the step's values
    (``minialex.step_values``) that holds it, read here as a kernel on the device reads it."""
    xp = backend.get_array_module(param)
    alpha = float(alpha)
    xp.subtract(grad, m, out=scratch)
    scratch *= 1.0 - beta_1
    m += scratch                                   # m += (1 - beta_1) * (g - m)
    xp.multiply(grad, grad, out=scratch)
    scratch -= v
    scratch *= 1.0 - beta_2
    v += scratch                                   # v += (1 - beta_2) * (g^2 - v)
    xp.sqrt(v, out=scratch)
    scratch += epsilon
    xp.divide(m, scratch, out=scratch)
    scratch *= alpha
    param -= scratch                               # p -= alpha_t * m / (sqrt(v) + epsilon)


class Adam(Optimizer):
    slot_names = ("m", "v")
    reads_step_values = True

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.beta_1 = hyperparameter("beta_1", beta_1, fraction, "in [0, 1)",
                                     " (each step divides by 1 - beta_1 ** t)")
        self.beta_2 = hyperparameter("beta_2", beta_2, fraction, "in [0, 1)")
        self.epsilon = hyperparameter("epsilon", epsilon, positive, POSITIVE,
                                      " (it keeps m / (sqrt(v) + epsilon) finite where v is 0)")
        self._scratch = {}
        super().__init__(learning_rate)

    def step_size(self, t):
        """alpha_t of update number t (1, 2, ...)."""
        return self.learning_rate * (1.0 - self.beta_2 ** t) ** 0.5 / (1.0 - self.beta_1 ** t)

    def write_step_values(self, values, t):
        super().write_step_values(values, t)
        values["alpha"] = self.step_size(t)

    def state_arrays(self) -> list:
        return super().state_arrays() + list(self._scratch.values())

    def update(self, index, param, grad):
        alpha = self.step_size(self.iterations) if self.values is None else self.values.view("alpha")
        scratch = self._scratch.get(index)
        if scratch is None or scratch.shape != param.shape or type(scratch) is not type(param):
            scratch = self._scratch[index] = backend.get_array_module(param).empty_like(param)
        adam(param, grad, self.slots["m"][index], self.slots["v"][index], scratch, alpha, self.beta_1, self.beta_2,
             self.epsilon)


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def get_optimizer(optimizer):
    """An Optimizer instance, or a name ('adam', 'sgd') for one with Keras's defaults."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"unknown optimizer {optimizer!r}; pass 'adam', 'sgd' or an optimizers.Optimizer")
