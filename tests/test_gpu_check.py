"""scripts/gpu_check.sh: on a machine without a GPU it says so and exits 0 at once; its GPU-path
Python is valid code."""

import os
import re
import shutil
import stat
import subprocess
import time

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _fake_nvidia_smi(folder, output, code):
    """An `nvidia-smi` that prints `output` and exits `code` (what the real one does when the
    driver finds no device: "No devices were found", exit 6)."""
    path = folder / "nvidia-smi"
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("nvidia_smi", ["absent", "no devices"])
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path, nvidia_smi):
    if shutil.which("nvidia-smi") and nvidia_smi == "absent":
        pytest.skip("this machine has nvidia-smi: the no-GPU path cannot be shown by absence")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "grep", "dirname"):  # the script's own needs, nothing else
        os.symlink(shutil.which(tool), bin_dir / tool)
    if nvidia_smi == "no devices":
        _fake_nvidia_smi(bin_dir, "No devices were found", 6)
    # The Python it would run does not exist: reaching any install/training step would fail.
    env = {"PATH": str(bin_dir), "PYTHON": str(tmp_path / "no-python"), "HOME": str(tmp_path)}
    started = time.time()
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "no NVIDIA GPU on this machine" in result.stdout
    assert "exiting 0" in result.stdout and result.stderr == ""
    assert time.time() - started < 10


def test_a_listed_gpu_takes_the_gpu_path(tmp_path):
    """With a GPU listed, the script goes on to install: here the missing Python stops it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "grep", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    _fake_nvidia_smi(bin_dir, "GPU 0: Fake (UUID: GPU-0)", 0)
    env = {"PATH": str(bin_dir), "PYTHON": str(tmp_path / "no-python"), "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "no NVIDIA GPU" not in result.stdout
    assert "GPU 0: Fake" in result.stdout


def test_the_gpu_path_python_compiles():
    text = SCRIPT.read_text()
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    blocks = re.findall(r"<<'PY'\n(.*?)\nPY\n", text, flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        compile(block, str(SCRIPT), "exec")
    checks = blocks[1]
    for api in ("MirroredStrategy", "get_memory_info", "experimental_get_compiler_ir",
                "CudnnRNN"):
        assert api in checks
