"""Shared test helpers: the real data samples live in ../shared/data and may be absent."""

import fcntl
import json
import os
import pathlib
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> pathlib.Path:
    """Path of a real sample under ../shared/data, or skip the test with a reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data sample {path} is absent (see ../shared/data/README.md)")
    return path


def built_once(tmp_path_factory, name, build):
    """`build(folder)`'s JSON result, built once per test run even across xdist workers: the
    first worker to ask builds into a folder of the run's shared temporary root under a file
    lock; the others wait on the lock and reuse that folder (they only read it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, the parent of every worker's popen-gwK/
    folder, result = root / f"built_{name}", root / f"built_{name}.json"
    with open(root / f"built_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.exists():
            return json.loads(result.read_text())
        shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
        folder.mkdir()
        value = build(folder)
        result.write_text(json.dumps(value))
        return value


@pytest.fixture(scope="session")
def warm_start_runs(tmp_path_factory):
    """The two trained runs of test_warm_start (window 1, then warm-started on window 2),
    trained once for test_warm_start and test_publish."""
    from test_warm_start import make_runs

    return built_once(tmp_path_factory, "warm_start_runs", make_runs)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A small synthetic click log (1,500 sessions, 120 items) built with the real YOOCHOOSE
    builder as yoochoose/yoochoose_full, once for every test module that trains on it. Tests
    write run folders elsewhere and never change it."""
    def build(root):
        from narm_tf import synthetic
        from narm_tf.data import dataset as data

        manual = root / "manual"
        manual.mkdir()
        synthetic.write_synthetic_clicks(str(manual / "yoochoose-clicks.dat"),
                                         num_sessions=1500, num_items=120, seed=3)
        data.build_dataset("yoochoose/yoochoose_full", manual_dir=str(manual),
                           data_dir=str(root / "tfds"))
        return str(root / "tfds")

    return built_once(tmp_path_factory, "synthetic_data", build)


# The slowest test modules, slowest first (minutes of training, Beam pipelines or subprocess
# TensorFlow starts). scripts/test.sh hands whole modules to the xdist workers in collection
# order (--dist loadfile --no-loadscope-reorder): these start first, and the short modules
# fill the gaps at the end, so both workers finish about together.
SLOWEST_MODULES = ("test_train.py", "test_beam.py", "test_tune.py", "test_builders.py",
                   "test_distribute.py", "test_model.py", "test_publish.py", "test_layers.py",
                   "test_export.py", "test_repeat.py", "test_cli.py", "test_covisit.py",
                   "test_sampled.py", "test_reduced_precision.py", "test_data.py",
                   "test_string_ids.py", "test_predict.py", "test_packaging.py",
                   "test_inference.py", "test_evaluate.py")


def pytest_collection_modifyitems(items):
    """Runs the modules of SLOWEST_MODULES first, in that order; each module's tests keep
    their order."""
    rank = {name: index for index, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
