"""`pip install .` gives a user the commands without a clone: the console scripts run the
installed package from any folder."""

import os
import subprocess
import sys
import venv

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
SCRIPTS = ("narm-train", "narm-evaluate", "narm-export", "narm-predict", "narm-tune",
           "narm-demo", "narm-experiments")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtual environment (seeing this machine's packages) with the project installed from
    a copy of the repository, which is then deleted: nothing can come from a clone."""
    root = tmp_path_factory.mktemp("install")
    copy = root / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", "--detach"], check=True)
    changed = subprocess.run(  # the working tree's edits and new files too, as a developer runs it
        ["git", "-C", str(ROOT), "ls-files", "--modified", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True).stdout.split()
    for name in changed:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes((ROOT / name).read_bytes())
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-build-isolation", str(copy)], check=True,
                   capture_output=True)
    subprocess.run(["rm", "-rf", str(copy)], check=True)
    return env_dir


def test_every_console_script_is_installed(installed):
    for script in SCRIPTS:
        assert os.access(installed / "bin" / script, os.X_OK), script


def test_the_scripts_run_the_installed_package_from_any_folder(installed, tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    where = subprocess.run([installed / "bin" / "python", "-c",
                            "import narm_tf, tfds_builders; print(narm_tf.__file__); "
                            "print(tfds_builders.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert all("site-packages" in line for line in where.stdout.split())
    assert str(ROOT) not in where.stdout
    shown = subprocess.run([installed / "bin" / "narm-export", "--helpfull"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 1, shown.stderr[-2000:]  # absl's help exits 1
    assert "--export_base" in shown.stdout and "--only_if_better" in shown.stdout
    failed = subprocess.run([installed / "bin" / "narm-train", "--dataset=click_log/nowhere",
                             "--data_dir=~/no_tfds"], cwd=tmp_path,
                            env={**env, "HOME": str(tmp_path)}, capture_output=True,
                            text=True, timeout=300)
    lines = (failed.stdout + failed.stderr).strip().splitlines()
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    assert lines[-1:] == [f"narm-train: Dataset click_log/nowhere is not built in "
                     f"{tmp_path}/no_tfds (that folder does not exist); build it first, e.g. "
                     f"`tfds build tfds_builders/click_log --manual_dir=... "
                     f"--data_dir={tmp_path}/no_tfds` or narm_tf.data.dataset.build_dataset(...)."]
