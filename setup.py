"""narm-tf: NARM (Li et al., CIKM 2017) in TensorFlow/Keras, from raw click logs to TF Serving."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
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
    # (`python -m export.export_saved_model`), so no top-level `export` package is installed.
    packages=find_packages(include=["narm_tf", "narm_tf.*", "tfds_builders", "tfds_builders.*"]),
    package_data={"narm_tf": ["configs/*.cfg"]},
    install_requires=REQUIREMENTS,
)
