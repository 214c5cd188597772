"""Options shared by the test suite (tests/) and the benchmarks (benchmarks/)."""


def pytest_addoption(parser):
    parser.addoption("--backend", default="all", choices=["all", "numpy", "cupy"],
                     help="array backend: tests run on each available one by default ('all'); "
                          "benchmarks on numpy unless told")
