"""Makes `narm_tf` and `tfds_builders` importable when a clone's builder runs uninstalled.

`tfds build tfds_builders/<name>` imports the builder folder as a top-level package (with
`tfds_builders/` on `sys.path`, so this module is found as `clone_path`); the clone's root is
not on `sys.path`. Importing this module puts it first, so the builder runs this clone's
`narm_tf`. Inside the package (`tfds_builders.<name>...`) `tfds_builders/__init__.py` makes the
same `import clone_path` resolve to this module. The one place that knows where the root is.
"""

import pathlib
import sys

ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
