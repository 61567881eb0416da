"""Builder tests on hand-made raw files that are stored under names of their own.

The builders read the downloads' exact names (`yoochoose-clicks.dat`, `train-item-views.csv`)
from the manual folder. The tests' hand-made files keep other names in `dummy_data/`, so no
file in the repository can be taken for (or checked as) a real download.
"""

from __future__ import annotations

import atexit
import pathlib
import shutil
import tempfile


def raw_named_dummy_data(test_file: str, raw_files: dict[str, str]) -> str:
    """A temporary manual folder holding `dummy_data/<stored>` (beside `test_file`) under each
    `read_as` name of `raw_files` {read_as: stored}; for `DatasetBuilderTestCase.EXAMPLE_DIR`.
    Removed when the process exits."""
    dummy_data = pathlib.Path(test_file).resolve().parent / "dummy_data"
    manual_dir = tempfile.mkdtemp(prefix="narm_dummy_")
    atexit.register(shutil.rmtree, manual_dir, ignore_errors=True)
    for read_as, stored in raw_files.items():
        shutil.copy(dummy_data / stored, pathlib.Path(manual_dir) / read_as)
    return manual_dir
