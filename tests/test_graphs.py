"""The rules a captured step keeps, held on the CPU by the emulator of CUDA graph capture and replay
(``minialex.graph_stand_in``), each against the same work run eagerly on the launch counter's stand-in
(``minialex.stand_in``): the very same NumPy operations, so equal means bit for bit.

- k steps of ``fit`` replayed equal k eager steps: weights, optimiser state, generator, history;
- a replay runs none of the model's Python, and a step is four host calls;
- the trace is the same from step to step; numbers passed as arguments would be frozen (shown failing);
- a capture refuses host reads, uploads and allocations outside its own pool, and changes no memory;
- the pointers a graph holds are listed, and new ones make a new capture;
- evaluate and predict replay too; graphs switch off with MINIALEX_CUDA_GRAPHS=0; a failed capture
  says so in one line and runs eagerly.
"""
import contextlib

import numpy as np
import pytest

from minialex import backend, graph_stand_in, graphs, random, stand_in, training
from minialex.layers import Layer
from minialex.layers import dropout as dropout_layer
from minialex.models import Sequential, alexnet_mnist
from minialex.step_values import StepDraws, StepValues

from .test_models import quadrant_data, small_model

BATCH = 16


def host(array):
    return np.asarray(array).copy()


def compiled(make=small_model, optimizer="adam", seed=0):
    random.set_seed(seed)
    model = make()
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def fitted(on, steps=5, epochs=1, make=small_model, optimizer="adam", samples=None, **fit):
    """(weights, optimiser state, generator state, history, the fit's TrainingSteps, host calls) of ``fit``
    on ``on`` (stand_in.counting: eager; graph_stand_in.emulating: graphs)."""
    x, y = quadrant_data(samples or BATCH * steps)
    kept = []
    with on() as counter:
        model = compiled(make, optimizer)
        make_steps = model.training_steps
        model.training_steps = lambda *args: kept.append(make_steps(*args)) or kept[-1]
        history = model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0, **fit)
        state = {key: value if isinstance(value, int) else host(value)
                 for key, value in model.optimizer.get_state().items()}
        return (model.get_weights(), state, random.get_rng().get_state(), history.history, kept[0],
                counter.total)


def assert_same(first, second):
    for a, b in zip(first, second):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            assert_same(list(a.values()), list(b.values()))
        elif isinstance(a, (list, tuple)):
            assert_same(a, b)
        else:
            assert np.array_equal(a, b), (a, b)


def test_k_steps_replayed_equal_k_eager_steps_bit_for_bit():
    eager, replayed = fitted(stand_in.counting, steps=6), fitted(graph_stand_in.emulating, steps=6)
    assert_same(eager[:4], replayed[:4])             # weights, optimiser state (iterations too), generator, history
    assert eager[4].counts == {"eager": 6}
    assert replayed[4].counts == {"eager": 1, "captured": 1, "replayed": 4}
    assert replayed[1]["iterations"] == 6 and replayed[2]["position"] > 0


@pytest.mark.parametrize("norm", ["lrn", "batchnorm"])
def test_the_tutorial_network_replays_bit_for_bit(norm):
    """Every kernel of the tutorial network (LRN, pooling, dropout; or BatchNormalization's statistics
    and moving averages, the weights not trained) through capture and replay, at batch 8."""
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 32, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]
    results = []
    for on in (stand_in.counting, graph_stand_in.emulating):
        with on():
            model = compiled(lambda: alexnet_mnist(norm=norm))
            model.fit(x, y, epochs=1, batch_size=8, verbose=0)
            results.append(model.get_weights())
    assert_same(*results)


def stepping(on, make=small_model):
    """(the model, its TrainingSteps on quadrant data, run(step)) inside ``on``; call within the block."""
    x, y = quadrant_data(BATCH * 8)
    model = compiled(make)
    x, y = model.prepare_inputs(x, y)
    guard = training.NonFiniteGuard(model, 8, x)
    steps = model.training_steps(x, y, guard)
    steps.start_epoch()
    return model, steps, lambda step, rows=BATCH: steps.run(step, slice(step * BATCH, step * BATCH + rows))


def test_a_replay_runs_none_of_the_model_s_python_and_a_step_is_four_host_calls(monkeypatch):
    results = []
    for on in (stand_in.counting, graph_stand_in.emulating):
        with on() as counter:
            model, steps, run = stepping(on)
            for step in range(3):
                run(step)
            if on is graph_stand_in.emulating:
                for name in ("train_step", "apply_gradients", "forward_loss", "backward"):
                    monkeypatch.setattr(model, name, lambda *args, **kwargs: pytest.fail("the model's Python ran"))
                counter.counts.clear()
                assert run(3) == "replayed"
                assert counter.total == 4          # the step's values, the batch's images and labels, the graph
                monkeypatch.undo()
            else:
                run(3)
            results.append([host(w) for w in model.get_weights()] + [host(s) for s in steps.sums()])
    assert_same(*results)


def test_the_trace_is_the_same_from_step_to_step():
    with graph_stand_in.emulating():
        model, steps, run = stepping(graph_stand_in.emulating)
        traces = []
        for first in (0, 4):
            steps.batches.clear()                  # a fresh capture: eager at ``first``, captured at ``first + 1``
            assert [run(first), run(first + 1)] == ["eager", "captured"]
            traces.append(steps.batches[BATCH].replayer.graph.trace())
    assert traces[0] == traces[1]
    names = [name for name, _, _ in traces[0]]
    assert "dropout" in names and "adam" in names and "record_step" in names


def test_numbers_passed_as_arguments_are_frozen_by_a_capture():
    """Without the step's values, Adam's step size and the dropout layer's generator are arguments: a
    capture freezes them, the replays repeat the first step's, and the weights drift from eager steps."""
    x, y = quadrant_data(BATCH)
    results, traces = [], []
    for capture in (False, True):
        with graph_stand_in.emulating():
            model = compiled()
            xb, yb = model.prepare_inputs(x, y)

            def step():
                model.train_step(xb, yb)
                model.apply_gradients()

            step()                                   # a first step: the optimiser's slots exist
            if capture:
                support = graph_stand_in.MODULE.graphs
                with support.running(support.new_pool()), support.capturing() as captured:
                    step()
                traces.append(captured.graph.trace())
                for _ in range(3):
                    captured.graph.launch()
                with support.running(support.new_pool()), support.capturing() as again:
                    step()
                traces.append(again.graph.trace())
            else:
                for _ in range(3):
                    step()
            results.append(host(model.flat_parameters))
    assert not np.array_equal(*results)
    assert traces[0] != traces[1]                     # Adam's alpha_t and the generator's position differ


def test_a_capture_refuses_host_reads_uploads_and_allocations_outside_its_pool():
    support = graph_stand_in.MODULE.graphs
    with graph_stand_in.emulating():
        x = backend.to_device(np.arange(6, dtype=np.float32))
        refused = {
            "a host read (__float__)": lambda: float(x.sum()),
            "a host read (__bool__)": lambda: bool((x > 2).any()),
            "a host read (get)": lambda: backend.to_numpy(x),
            "an upload (asarray of host data)": lambda: backend.to_device(np.ones(3, dtype=np.float32)),
            "an upload (host data written into a device array)": lambda: x.__setitem__(0, np.ones(1, np.float32)),
        }
        for what, work in refused.items():
            with pytest.raises(graph_stand_in.CaptureError, match=rf"^{what.replace('(', '.').replace(')', '.')}"):
                with support.running(support.new_pool()), support.capturing():
                    work()
        with pytest.raises(graph_stand_in.CaptureError, match="allocation outside the capture's pool"):
            with support.running(None), support.capturing():
                x * 2
        with support.running(support.new_pool()), support.capturing() as captured:
            x *= 2                                   # memory from before the capture: put back at its end
            y = x + 1                                # the pool's
        assert host(x).tolist() == [0, 1, 2, 3, 4, 5]
        captured.graph.launch()
        captured.graph.launch()
        assert host(x).tolist() == [0, 4, 8, 12, 16, 20] and host(y).tolist() == [1, 5, 9, 13, 17, 21]
        assert support.node_count(captured.graph) == 2


def test_the_pointers_a_graph_holds_are_listed():
    with graph_stand_in.emulating():
        model, steps, run = stepping(graph_stand_in.emulating)
        run(0), run(1)
        batch = steps.batches[BATCH]
        graph = batch.replayer.graph
        known = {"parameters": model.flat_parameters, "gradients": model.flat_gradients, "images": batch.x,
                 "labels": batch.y, "step's values": steps.values.device, "loss record": steps.guard.losses,
                 "loss sum": steps.loss_sum, "correct count": steps.correct}
        known.update({f"optimiser array {k}": a for k, a in enumerate(model.optimizer.state_arrays())})
        held = {name for array in graph.held() for name, known_array in known.items()
                if np.shares_memory(array, known_array)}
        assert len(graph.held()) == len(known) and held == set(known)
        assert not any(root in graph.pool for root in graph.held())
        assert len(graph.pool.roots) > 10                     # the step's temporaries: the graph's own


def test_new_pointers_make_a_new_capture_and_set_weights_needs_none():
    """``build`` (new weight buffers), a loaded optimiser state (new slots) and another batch size each
    make a new capture; ``set_weights`` writes into the weights in place, so the graph reads the new
    values where it held the old ones. The emulated run equals the eager one all along."""
    results = []
    for on in (stand_in.counting, graph_stand_in.emulating):
        with on():
            model, steps, run = stepping(on)
            hows = [run(0), run(1), run(2)]
            model.set_weights([w * 0.5 for w in model.get_weights()])
            hows.append(run(3))
            model.build()
            hows += [run(4), run(5)]
            model.optimizer.set_state(model.optimizer.get_state())
            hows += [run(6), run(7, rows=8), run(7, rows=8), run(7, rows=8)]
            results.append([host(w) for w in model.get_weights()])
        if on is graph_stand_in.emulating:
            assert hows == ["eager", "captured", "replayed", "replayed", "eager", "captured", "eager", "eager",
                            "captured", "replayed"]
    assert_same(*results)


def test_evaluate_and_predict_replay_too():
    x, y = quadrant_data(50)
    results, counts = [], None
    for on in (stand_in.counting, graph_stand_in.emulating):
        with on():
            model = compiled()
            model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
            evaluated = [model.evaluate(x, y, batch_size=BATCH) for _ in range(3)]
            predicted = [model.predict(x[k:], batch_size=BATCH) for k in (0, 2, 4)]
            results.append(evaluated + predicted)
            counts = graphs.inference(model).counts
    assert_same(*results)
    # evaluate at 16 (3 times a call) and 2; predict at 16; predict's 2 and 14 ran once each: eagerly
    assert counts == {"eager": 5, "captured": 3, "replayed": 15}


def test_graphs_switch_off_with_the_setting(monkeypatch):
    monkeypatch.setenv(graphs.SETTING, "0")
    off = fitted(graph_stand_in.emulating, steps=4)
    monkeypatch.delenv(graphs.SETTING)
    on = fitted(graph_stand_in.emulating, steps=4)
    assert off[4].counts == {"eager": 4} and on[4].counts["replayed"] == 2
    assert_same(off[:4], on[:4])


def test_another_optimiser_runs_its_steps_eagerly():
    assert fitted(graph_stand_in.emulating, steps=3, optimizer="sgd")[4].counts == {"eager": 3}


class HostReading(Layer):
    """A layer whose training forward reads the host (as a layer that checks its input would)."""

    def forward(self, x, training=False):
        x = self._prepare(x)
        if training and float(abs(x).max()) > 1e6:
            raise ValueError("inputs too large")
        return x

    def backward(self, dout, input_grad=True):
        return dout


def test_a_failed_capture_says_so_in_one_line_and_runs_eagerly(capsys):
    def make():
        return Sequential([HostReading(input_shape=(8, 8, 1)), *small_model().layers])

    eager = fitted(stand_in.counting, steps=4, make=make)
    emulated = fitted(graph_stand_in.emulating, steps=4, make=make)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"minialex: the CUDA graph of a training step of {BATCH} samples could not be captured "
                     "(CaptureError: a host read (__float__) inside a CUDA graph capture: a graph replays launches "
                     "only (a host read or a synchronous copy breaks a capture on a card, and its value would be "
                     "frozen)); it runs eagerly"]
    assert emulated[4].counts == {"eager": 4}
    assert_same(eager[:4], emulated[:4])


def test_step_draws_draw_the_generator_s_own_numbers():
    generator = random.Generator(5)
    generator.bits(7)
    draws = StepDraws(StepValues(like=np.zeros(1)))
    draws.start_step(generator)
    x = np.ones((6, 4), dtype=np.float32)
    expected = [dropout_layer.dropout(x, 0.5, generator)[1] for _ in range(2)]
    got = [dropout_layer.dropout(x, 0.5, draws)[1] for _ in range(2)]
    assert_same(expected, got)
    assert draws.count == 48 and generator.position == 7 + 48


def test_the_cupy_support_captures_on_its_own_stream_with_the_graph_s_pool():
    """CupyGraphs's calls, in order, on a stand-in for CuPy's streams, pools and graphs (a card runs the real ones)."""
    calls = []

    class Stream:
        ptr = 1234

        def __enter__(self):
            calls.append("stream")

        def __exit__(self, *exc):
            calls.append("/stream")

        def begin_capture(self):
            calls.append("begin")

        def end_capture(self):
            calls.append("end")
            return Graph()

    class Graph:
        graph = 0

        def launch(self, stream):
            calls.append(f"launch on {stream.ptr}")

    class Pool:
        def malloc(self, size):
            return size

    @contextlib.contextmanager
    def using_allocator(malloc):
        calls.append("pool")
        yield
        calls.append("/pool")

    cuda = type("cuda", (), {"Stream": Stream, "MemoryPool": Pool, "using_allocator": staticmethod(using_allocator)})
    cupy = type("cupy", (), {"__name__": "cupy", "cuda": cuda})
    support = graphs.CupyGraphs(cupy)
    replayer = graphs.Replayer(support, lambda: calls.append("work"), "a test")
    assert [replayer.run() for _ in range(3)] == ["eager", "captured", "replayed"]
    assert calls == ["stream", "pool", "work", "/pool", "/stream",
                     "stream", "pool", "begin", "work", "end", "/pool", "/stream", "launch on 1234", "launch on 1234"]


def test_the_cublas_library_is_found_in_the_process_s_memory_map():
    from minialex import cublas

    assert cublas.loaded_library("libc.so").startswith("/") and "libc.so" in cublas.loaded_library("libc.so")
    assert cublas.loaded_library("libnothing_here.so") == "libnothing_here.so"
    assert cublas.gemm_arguments(((4, 3), (1, 8)), ((3, 2), (2, 1)), ((4, 2), (2, 1))) == (0, 1, 2, 4, 3, 2, 8, 2)
    assert cublas.gemm_arguments(((4, 3), (6, 2)), ((3, 2), (2, 1)), ((4, 2), (2, 1))) is None   # no unit stride
