#!/usr/bin/env bash
# GPU check: on a machine with NVIDIA GPUs, installs the requirements and checks the GPU
# path end to end, in about 3-5 minutes on one GPU (bounded at 8 by the step budgets below):
#   1. the demo data (the embedded synthetic click log, built with the real TFDS builder);
#   2. narm_tf.train on it under MirroredStrategy over all GPUs (what make_strategy picks), and
#      the same flags and seed on the CPU (CUDA_VISIBLE_DEVICES=-1): the final training loss
#      must agree within 3% relative and test Recall@20 / MRR@20 within 3 points. Why not
#      closer: cuDNN's GRU and the CPU loop sum in other orders, GPUs may run float32 matmuls in
#      TF32, and dropout masks are drawn on each device; 3 epochs keep the drift small;
#   3. the trained model's training step holds a cuDNN GRU op (CudnnRNNV3) on the GPU, and XLA
#      compiles and runs (HLO via experimental_get_compiler_ir) the DIGINETICA-sized decoder
#      step (bilinear scores + cross-entropy + gradient) on the GPU, matching the unjitted
#      result. Keras 3 does not XLA-compile a model whose GRU runs on cuDNN (cuDNN ops are not
#      XLA ops: keras/src/layers/rnn/gru.py sets supports_jit=False); the check prints which
#      of the two the full step used;
#   4. examples/s and peak GPU memory (tf.config.experimental.get_memory_info) of model.fit on
#      a DIGINETICA-sized problem (43,097 items, batch 512, D=50, H=100).
# Without a GPU (no nvidia-smi, or it lists none) it says so and exits 0.
#
#   bash scripts/gpu_check.sh            # PYTHON=python3.11 bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi absent or lists no GPU):" \
       "nothing to check, exiting 0."
  exit 0
fi
nvidia-smi -L

bash scripts/install.sh
if ! "$PYTHON" -c "import tensorflow as tf, sys; sys.exit(not tf.config.list_physical_devices('GPU'))"; then
  echo "gpu_check: nvidia-smi sees GPUs but TensorFlow does not. Install TensorFlow's CUDA" \
       "libraries: $PYTHON -m pip install 'tensorflow[and-cuda]==2.21.0'" >&2
  exit 1
fi

WORK=$(mktemp -d -t narm-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2

"$PYTHON" - "$WORK" <<'PY'
import os, sys
from narm_tf import synthetic
from narm_tf.data import dataset as data
work = sys.argv[1]
os.makedirs(os.path.join(work, "manual"))
synthetic.write_synthetic_clicks(os.path.join(work, "manual", "yoochoose-clicks.dat"))
data.build_dataset("yoochoose/yoochoose_full", os.path.join(work, "manual"),
                   os.path.join(work, "tfds"))
PY

TRAIN=(-m narm_tf.train --flagfile=narm_tf/configs/demo.cfg --data_dir="$WORK/tfds" --epochs=3
       --patience=3 --seed=0)
echo "== training on the GPU(s)"
"$PYTHON" "${TRAIN[@]}" --model_dir="$WORK/gpu"
echo "== training on the CPU, same flags and seed"
CUDA_VISIBLE_DEVICES=-1 "$PYTHON" "${TRAIN[@]}" --model_dir="$WORK/cpu"

# --- gpu-check-python (tests/test_gpu_check.py compiles this block)
"$PYTHON" - "$WORK" <<'PY'
"""Compares the GPU and CPU runs, checks cuDNN and XLA, and times a DIGINETICA-sized fit."""
import csv
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from narm_tf.model import narm as narm_model

work = sys.argv[1]
LOSS_RTOL, METRIC_POINTS = 0.03, 3.0
failures = []


def run_results(name):
    with open(os.path.join(work, name, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(work, name, "history.csv")) as f:
        loss = float(list(csv.DictReader(f))[-1]["loss"])
    return metrics, loss


(gpu, gpu_loss), (cpu, cpu_loss) = run_results("gpu"), run_results("cpu")
print(f"GPU run: {gpu['replicas']} replica(s), final loss {gpu_loss:.4f}; CPU run: {cpu_loss:.4f}")
if abs(gpu_loss - cpu_loss) > LOSS_RTOL * abs(cpu_loss):
    failures.append(f"final loss GPU {gpu_loss:.4f} vs CPU {cpu_loss:.4f} (> {LOSS_RTOL:.0%})")
for key in ("recall@20", "mrr@20"):
    g, c = gpu["test"][key], cpu["test"][key]
    print(f"test {key}: GPU {g:.2f}  CPU {c:.2f}")
    if abs(g - c) > METRIC_POINTS:
        failures.append(f"test {key} GPU {g:.2f} vs CPU {c:.2f} (> {METRIC_POINTS} points)")

# cuDNN: the training step of the trained model, traced on the GPU, holds CudnnRNNV3.
model = keras.models.load_model(os.path.join(work, "gpu", "best.keras"))
with tf.device("/GPU:0"):
    @tf.function
    def forward_backward(items):
        with tf.GradientTape() as tape:
            scores = model(items, training=True)
        return tape.gradient(tf.reduce_sum(scores), model.trainable_variables)

    graph = forward_backward.get_concrete_function(
        tf.TensorSpec([None, 19], tf.int32)).graph
ops = {op.type for op in graph.get_operations()}
ops |= {node.op for f in graph.as_graph_def().library.function for node in f.node_def}
if not any(op.startswith("CudnnRNN") for op in ops):
    failures.append("no cuDNN GRU op (CudnnRNNV3) in the GPU training step")
else:
    print("cuDNN GRU kernel: used (CudnnRNNV3 in the GPU training step)")

# XLA on the GPU: the decoder step at DIGINETICA size, compiled and checked against no XLA.
num_items, batch = 43097, 512
rng = np.random.default_rng(0)
embeddings = tf.constant(rng.normal(0, 0.05, [num_items + 1, 50]), tf.float32)
session = tf.constant(rng.normal(0, 1, [batch, 50]), tf.float32)
labels = tf.constant(rng.integers(1, num_items + 1, batch), tf.int32)


def decoder_step(embeddings, session, labels):
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        scores = tf.matmul(session, embeddings, transpose_b=True)
        loss = tf.reduce_mean(narm_model.cross_entropy(labels, scores))
    return loss, tape.gradient(loss, embeddings)


with tf.device("/GPU:0"):
    jitted = tf.function(decoder_step, jit_compile=True)
    hlo = jitted.experimental_get_compiler_ir(embeddings, session, labels)(stage="hlo")
    xla_loss, _ = jitted(embeddings, session, labels)
    plain_loss, _ = tf.function(decoder_step)(embeddings, session, labels)
if "HloModule" not in hlo or abs(float(xla_loss) - float(plain_loss)) > 1e-3:
    failures.append(f"XLA decoder step: loss {float(xla_loss)} vs {float(plain_loss)}")
else:
    print(f"XLA: the decoder step compiles and runs on the GPU (loss {float(xla_loss):.5f})")

# Examples/s and peak memory of model.fit at DIGINETICA size, over all GPUs.
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
    big = narm_model.build_narm(num_items)
    narm_model.compile_narm(big)
print(f"full step under XLA: {bool(big.jit_compile)} (Keras turns it off when cuDNN runs the GRU)")
lengths = rng.integers(1, 20, 64 * batch)
items = np.where(np.arange(19)[None] < lengths[:, None],
                 rng.integers(1, num_items + 1, (64 * batch, 19)), 0).astype(np.int32)
dataset = tf.data.Dataset.from_tensor_slices(
    (items, rng.integers(1, num_items + 1, 64 * batch).astype(np.int32))).batch(batch).repeat()
big.fit(dataset, steps_per_epoch=32, epochs=1, verbose=0)  # warm-up: tracing, autotuning
gpus = [f"GPU:{i}" for i in range(len(tf.config.list_logical_devices("GPU")))]
for device in gpus:
    tf.config.experimental.reset_memory_stats(device)
start = time.perf_counter()
big.fit(dataset, steps_per_epoch=128, epochs=1, verbose=0)
seconds = time.perf_counter() - start
peak = max(tf.config.experimental.get_memory_info(d)["peak"] for d in gpus) / 2**20
print(f"DIGINETICA-sized fit on {len(gpus)} GPU(s): {128 * batch / seconds:,.0f} examples/s, "
      f"peak GPU memory {peak:,.0f} MiB (largest of the GPUs)")

if failures:
    print("gpu_check FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print("gpu_check: all checks passed")
PY
# --- end gpu-check-python
