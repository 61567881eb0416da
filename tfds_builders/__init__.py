"""TFDS builders of the session datasets: `tfds build tfds_builders/<name>`.

Layout (TFDS's own): one folder a dataset, `<name>/<name>_dataset_builder.py` with a class
`Builder`, its `<name>_dataset_builder_test.py` and `dummy_data/` beside it; the schema and the
code the builders share in `session_prefixes.py`; `clone_path.py` for uninstalled clones.
"""

import importlib
import sys

# Builders start with `import clone_path`, which `tfds build` resolves as a top-level module:
# give it the same module here, inside the package.
sys.modules.setdefault("clone_path", importlib.import_module("tfds_builders.clone_path"))
