"""narm-tf: NARM (Li et al., CIKM 2017) in TensorFlow/Keras, from raw click logs to TF Serving."""

import ast
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
# The console scripts and their command modules (narm_tf/cli.py's CONSOLE_SCRIPTS, read here
# without importing the package, which needs TensorFlow).
CONSOLE_SCRIPTS = next(
    ast.literal_eval(node.value)
    for node in ast.parse((HERE / "narm_tf" / "cli.py").read_text()).body
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CONSOLE_SCRIPTS")
REQUIREMENTS = [
    line.split("#")[0].strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "ruff"))
]

setup(
    name="narm-tf",
    version="0.1.0",
    description="Neural Attentive Session-based Recommendation (NARM) in TensorFlow/Keras",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The serving code is `narm_tf.serving`; `export/` only holds the clone's commands
    # (`python -m export.export_saved_model`), so no top-level `export` package is installed:
    # an installed package has `narm-export` instead.
    packages=find_packages(include=["narm_tf", "narm_tf.*", "tfds_builders", "tfds_builders.*"]),
    package_data={"narm_tf": ["configs/*.cfg"],
                  "tfds_builders": ["*/dummy_data/*", "*/dummy_data/*/*"]},
    entry_points={"console_scripts": [
        f"{script} = {module}:run" for script, module in CONSOLE_SCRIPTS.items()]},
    install_requires=REQUIREMENTS,
)
