"""Shared test helpers: the real data samples live in ../shared/data and may be absent."""

import os
import pathlib

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


@pytest.fixture(scope="session")
def warm_start_runs(tmp_path_factory):
    """The two trained runs of test_warm_start (window 1, then warm-started on window 2),
    trained once for test_warm_start and test_publish."""
    from test_warm_start import make_runs

    return make_runs(tmp_path_factory)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A small synthetic click log (1,500 sessions, 120 items) built with the real YOOCHOOSE
    builder as yoochoose/yoochoose_full, once for test_train and test_distribute. Tests write
    run folders elsewhere and never change it."""
    from narm_tf import synthetic
    from narm_tf.data import dataset as data

    root = tmp_path_factory.mktemp("synthetic_data")
    manual = root / "manual"
    manual.mkdir()
    synthetic.write_synthetic_clicks(str(manual / "yoochoose-clicks.dat"), num_sessions=1500,
                                     num_items=120, seed=3)
    data.build_dataset("yoochoose/yoochoose_full", manual_dir=str(manual),
                       data_dir=str(root / "tfds"))
    return str(root / "tfds")
