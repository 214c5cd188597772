"""Pictures of a training run, saved as PNG files: what the network learned, and where it errs.

    from minialex import viz
    viz.save_all(model, history, x_test, y_test_labels, "run/", initial_kernel=kernel_before)

    python -m minialex.viz RUN_DIR [--data-dir D]    # redraw a run saved by train_mnist.py --plots RUN_DIR

One function per picture: the loss and accuracy per epoch (``plot_history``), the first
convolution's filters (``plot_filters``), one digit's activations after every layer that still
outputs images (``plot_feature_maps``), the confusion matrix (``plot_confusion_matrix``) and the
misclassified digits (``plot_misclassified``). ``save_all`` draws them all under fixed file names.

matplotlib is optional (pip install 'minialex[viz]'): it is imported by the first picture drawn,
and without it every picture raises MatplotlibMissing saying so; ``import minialex`` never needs it.
Figures are drawn off-screen on an Agg canvas (no window ever opens) at fixed sizes, FIGSIZES[kind]
inches at DPI dots per inch, so every picture of a kind has the same pixel size.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy

from . import backend
from .data import DatasetUnavailableError, load_mnist, preprocess_images
from .layers import Conv2D
from .models import alexnet_mnist
from .serialization import atomic_write, load_npz

DPI = 100
FIGSIZES = {  # kind of picture -> (width, height) in inches; pixels = inches * DPI
    "history": (10, 4),
    "filters": (8, 4.5),
    "feature_maps": (12, 9),
    "confusion_matrix": (6.4, 5.6),
    "misclassified": (10, 5.6),
}
GRID_COLUMNS = 8           # images per row in the filter and misclassified grids
FEATURE_CHANNELS = 16      # channels shown per layer in the feature maps
INITIAL_WEIGHTS, WEIGHTS, HISTORY = "initial_weights.npz", "weights.npz", "history.json"  # a run folder's files
INSTALL_HINT = "pip install 'minialex[viz]'"


class MatplotlibMissing(ImportError):
    """A picture was asked for, but matplotlib is not installed."""


def _matplotlib():
    """matplotlib's (Figure, FigureCanvasAgg) classes, or MatplotlibMissing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing(f"minialex.viz draws with matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def _figure(kind, layout=None):
    """A new off-screen figure of the fixed size for ``kind`` (a FIGSIZES key)."""
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=FIGSIZES[kind], dpi=DPI, layout=layout)
    canvas_class(figure)
    return figure


def _grid(figure, rows, columns, left=0.01, right=0.99, top=0.9, bottom=0.01, wspace=0.1, hspace=0.1):
    """A rows x columns array of axes placed by fixed margins (constrained layout is slow for many axes)."""
    margins = dict(left=left, right=right, top=top, bottom=bottom, wspace=wspace, hspace=hspace)
    return figure.subplots(rows, columns, squeeze=False, gridspec_kw=margins)


def _save(figure, path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _labels(y, name, num_classes=None) -> numpy.ndarray:
    """``y`` as a NumPy vector of integer labels (in 0..num_classes-1 if given), or ValueError."""
    y = backend.to_numpy(y)
    if y.ndim != 1 or not numpy.issubdtype(y.dtype, numpy.integer):
        raise ValueError(f"{name} must be integer labels of shape (N,), got {y.dtype} {y.shape} "
                         "(one-hot rows become labels with .argmax(axis=1))")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    return y.astype(numpy.int64)   # uint8 labels, as loaded, would overflow in t * num_classes + p


# ---------------------------------------------------------------------------------------------
# The pictures


def plot_history(history, path) -> Path:
    """Loss and accuracy per epoch, training and validation, in two panels.

    ``history`` is what ``fit`` returns or its ``.history`` dict; the 'val_' curves are drawn
    when present.
    """
    logs = getattr(history, "history", history)
    if not logs.get("loss"):
        raise ValueError("the history holds no 'loss' values to plot")
    epochs = numpy.arange(1, len(logs["loss"]) + 1)
    figure = _figure("history", layout="constrained")
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            if logs.get(key):
                axes.plot(epochs, logs[key], marker="o", label=label)
        axes.set(title=metric, xlabel="epoch", xticks=epochs)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    return _save(figure, path)


def first_conv(model) -> Conv2D:
    """The model's first Conv2D layer."""
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            return layer
    raise ValueError("the model has no Conv2D layer")


def plot_filters(kernel, path, title="The first convolution's filters") -> Path:
    """A first convolution's filters as a grid of small images: ``kernel`` (KH, KW, 1, F), e.g. (3, 3, 1, 32).

    All filters share one colour scale, symmetric about zero (blue negative, white 0, red
    positive), so their weights compare across the grid; the colour bar gives the values.
    """
    kernel = backend.to_numpy(kernel)
    if kernel.ndim != 4 or kernel.shape[2] != 1:
        raise ValueError(f"plot_filters draws a first layer's kernel (KH, KW, 1, F), got shape {kernel.shape}")
    filters = kernel.shape[3]
    limit = float(numpy.abs(kernel).max()) or 1.0
    figure = _figure("filters")
    grid = _grid(figure, math.ceil(filters / GRID_COLUMNS), GRID_COLUMNS, right=0.88, hspace=0.3)
    for index, axes in enumerate(grid.flat):
        axes.set_axis_off()
        if index < filters:
            image = axes.imshow(kernel[:, :, 0, index], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes.set_title(str(index), fontsize=8)
    figure.colorbar(image, cax=figure.add_axes((0.91, 0.1, 0.02, 0.75)))
    figure.suptitle(title)
    return _save(figure, path)


def layer_activations(model, image) -> list:
    """[(name, activations (H, W, C) as NumPy)]: the input, then each layer's output while it is an image.

    ``image`` is one preprocessed sample, e.g. (32, 32, 1); the layers run one by one with
    ``forward(x, training=False)``, as at inference, until the first output that is not 4-D.
    """
    if tuple(image.shape) != tuple(model.input_shape):
        raise ValueError(f"expected one image of shape {model.input_shape}, got {tuple(image.shape)}")
    x = backend.to_device(image[None], dtype=model.dtype)
    rows = [("input", backend.to_numpy(x[0]))]
    for layer in model.layers:
        x = layer.forward(x, training=False)
        if x.ndim != 4:
            break
        rows.append((layer.name, backend.to_numpy(x[0])))
    return rows


def plot_feature_maps(model, image, path, channels=FEATURE_CHANNELS) -> Path:
    """One image through the network: a row per layer, its first ``channels`` channels as images.

    Each row shares one grey scale, from 0 (black; lower if the row has negative values) to the
    row's largest value (white), printed beside the layer's name and output shape; a row's scale
    is its own, so the largest values tell how a layer (LRN's division, pooling's maximum)
    changed the one before it.
    """
    rows = layer_activations(model, image)
    figure = _figure("feature_maps")
    grid = _grid(figure, len(rows), channels, left=0.135, top=0.94, wspace=0.08, hspace=0.12)
    for (name, maps), row in zip(rows, grid):
        height, width, depth = maps.shape
        low, high = min(float(maps.min()), 0.0), float(maps.max())
        row[0].text(-0.2, 0.5, f"{name}\n{height}x{width}x{depth}\nmax {high:.3g}", transform=row[0].transAxes,
                    ha="right", va="center", fontsize=8)
        for channel, axes in enumerate(row):
            axes.set_axis_off()
            if channel < depth:
                axes.imshow(maps[:, :, channel], cmap="gray", vmin=low, vmax=high if high > low else low + 1.0)
    figure.suptitle(f"One test digit through the network: the first {channels} channels after each layer")
    return _save(figure, path)


def confusion_matrix(y_true, y_pred, num_classes=10) -> numpy.ndarray:
    """counts[t, p]: how many samples of true class t were predicted as class p."""
    y_true = _labels(y_true, "y_true", num_classes)
    y_pred = _labels(y_pred, "y_pred", num_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} and {y_pred.size}")
    return numpy.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, -1)


def plot_confusion_matrix(y_true, y_pred, path, num_classes=10) -> Path:
    """The confusion matrix, each cell's count written in it; the title gives the accuracy."""
    counts = confusion_matrix(y_true, y_pred, num_classes)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no labels to count")
    figure = _figure("confusion_matrix", layout="constrained")
    axes = figure.subplots()
    figure.colorbar(axes.imshow(counts, cmap="Blues"), ax=axes)
    for true, predicted in numpy.ndindex(counts.shape):
        count = counts[true, predicted]
        axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7,
                  color="white" if count > counts.max() / 2 else "black")
    axes.set(xticks=range(num_classes), yticks=range(num_classes), xlabel="predicted class", ylabel="true class",
             title=f"{total} digits, accuracy {numpy.trace(counts) / total:.2%}")
    return _save(figure, path)


def plot_misclassified(images, y_true, y_pred, path, limit=32) -> Path:
    """The first ``limit`` misclassified images, each titled 'true -> predicted'.

    ``images`` (N, H, W) or (N, H, W, 1), in the order of the labels.
    """
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    images = backend.to_numpy(images)
    images = images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if images.ndim != 3 or not len(images) == len(y_true) == len(y_pred):
        raise ValueError(f"expected N images (N, H, W) or (N, H, W, 1) and N labels of each kind, got images "
                         f"{images.shape}, {len(y_true)} true and {len(y_pred)} predicted labels")
    wrong = numpy.flatnonzero(y_true != y_pred)
    shown = wrong[:limit]
    figure = _figure("misclassified")
    grid = _grid(figure, math.ceil(limit / GRID_COLUMNS), GRID_COLUMNS, hspace=0.35)
    for position, axes in enumerate(grid.flat):
        axes.set_axis_off()
        if position < len(shown):
            index = shown[position]
            axes.imshow(images[index], cmap="gray_r")
            axes.set_title(f"{y_true[index]} \u2192 {y_pred[index]}", fontsize=9)
    figure.suptitle(f"{len(wrong)} of {len(y_true)} digits misclassified; the first {len(shown)}, "
                    "titled true \u2192 predicted")
    return _save(figure, path)


def save_all(model, history, x_test, y_test_labels, out_dir, initial_kernel=None) -> list[Path]:
    """Draw every picture of a trained model into ``out_dir`` (created if needed); returns their paths.

    ``x_test`` preprocessed test images (N, 32, 32, 1) and ``y_test_labels`` their integer labels;
    the feature maps follow the first of them. ``initial_kernel``: the first convolution's kernel
    before training, for filters_before.png (not drawn when None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_history(history, out / "history.png")]
    if initial_kernel is not None:
        paths.append(plot_filters(initial_kernel, out / "filters_before.png",
                                  "First convolution's filters, before training"))
    paths.append(plot_filters(first_conv(model).params["kernel"], out / "filters_after.png",
                              "First convolution's filters, after training"))
    paths.append(plot_feature_maps(model, x_test[0], out / "feature_maps.png"))
    y_pred = model.predict(x_test).argmax(axis=1)
    paths.append(plot_confusion_matrix(y_test_labels, y_pred, out / "confusion_matrix.png", model.output_shape[0]))
    paths.append(plot_misclassified(x_test, y_test_labels, y_pred, out / "misclassified.png"))
    return paths


# ---------------------------------------------------------------------------------------------
# A run folder: what train_mnist.py --plots DIR saves, and redrawing from it


def save_run(run_dir, model, history) -> None:
    """Write the trained weights and the history into ``run_dir`` (beside INITIAL_WEIGHTS)."""
    run_dir = Path(run_dir)
    model.save_weights(run_dir / WEIGHTS)
    with atomic_write(run_dir / HISTORY) as temporary, open(temporary, "w") as file:
        file.write(json.dumps(getattr(history, "history", history), indent=1) + "\n")


def draw_run(run_dir, model, x_test, y_test_labels) -> list[Path]:
    """``save_all`` into ``run_dir``, with the history saved there and, if saved, the initial filters."""
    run_dir = Path(run_dir)
    history = read_history(run_dir / HISTORY)
    initial_kernel = None
    if (run_dir / INITIAL_WEIGHTS).is_file():
        arrays, _ = load_npz(run_dir / INITIAL_WEIGHTS)
        key = f"{first_conv(model).name}/kernel"
        if key not in arrays:
            raise ValueError(f"{run_dir / INITIAL_WEIGHTS} holds no {key}")
        initial_kernel = arrays[key]
    return save_all(model, history, x_test, y_test_labels, run_dir, initial_kernel=initial_kernel)


def read_history(path) -> dict:
    """The history a run saved (``save_run``): {'loss': [...], ...}; a ValueError naming the file if it
    is not one (cut short, edited, another file)."""
    try:
        history = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:     # json's errors are ValueErrors
        raise ValueError(f"{path} is not a readable history ({exc}); it is written by train_mnist.py --plots DIR: "
                         f"run that again") from None
    if not (isinstance(history, dict) and all(isinstance(values, list) and all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
            for values in history.values())):
        raise ValueError(f"{path} is not a history of a run (a JSON object of lists of numbers); it is written by "
                         f"train_mnist.py --plots DIR: run that again")
    return history


def redraw(run_dir, data_dir=None) -> list[Path]:
    """Redraw a saved run's pictures: the tutorial network with its weights, on the MNIST test set."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file, not a run folder (train_mnist.py --plots DIR writes one)")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {run_dir}")
    missing = [name for name in (WEIGHTS, HISTORY) if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {' and '.join(missing)}; "
                                "a run folder is written by train_mnist.py --plots DIR")
    read_history(run_dir / HISTORY)          # a damaged run folder is said before the data are read
    model = alexnet_mnist()
    model.load_weights(run_dir / WEIGHTS)
    _, (x_test, y_test) = load_mnist(data_dir)
    return draw_run(run_dir, model, preprocess_images(x_test), y_test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minialex.viz",
                                     description="Redraw the pictures of a run saved by "
                                                 "train_mnist.py --plots RUN_DIR, without training.")
    parser.add_argument("run_dir", help="the folder given to --plots")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST files (default: $MINIALEX_DATA_DIR, the cache, or download)")
    args = parser.parse_args(argv)
    try:
        _matplotlib()
        paths = redraw(args.run_dir, args.data_dir)
    except (MatplotlibMissing, DatasetUnavailableError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
