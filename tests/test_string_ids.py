"""A shop whose ids are strings, end to end: SKUs and zero-padded numbers are built, trained on,
exported and served back exactly as the log writes them (the TF1 loader in a clean process)."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
from test_export import serve_isolated

from conftest import ROOT

SMALL = ("--batch_size=64", "--embedding_dim=16", "--hidden_units=16", "--eval_batch_size=256",
         "--jit_compile=off")


def sku(item: int) -> str:
    """Odd items get alphanumeric SKUs, even ones zero-padded numbers (11 digits)."""
    return f"SKU-{item}A" if item % 2 else f"{item:011d}"


@pytest.fixture(scope="module")
def sku_run(tmp_path_factory):
    """A synthetic log rewritten with string session ids and SKUs, built with the click_log
    builder, trained for 2 epochs and exported by the training command: (data_dir, model_dir,
    export_dir)."""
    from narm_tf import synthetic
    from narm_tf.data.clicks import ClickLog
    from tfds_builders.click_log import click_log_dataset_builder as click_log

    root = tmp_path_factory.mktemp("skus")
    raw = root / "yoochoose-clicks.dat"
    synthetic.write_synthetic_clicks(str(raw), num_sessions=1500, num_items=120, seed=3)
    clicks = pd.read_csv(raw, header=None, names=["sid", "ts", "item", "category"], dtype=str)
    manual = root / "manual"
    manual.mkdir()
    pd.DataFrame({"session": "visit-" + clicks["sid"],
                  "sku": [sku(int(item)) for item in clicks["item"]],
                  "ts": clicks["ts"]}).to_csv(manual / "clicks.csv", index=False)
    config = click_log.ClickLogConfig(name="skus", files="clicks.csv", session="session",
                                      item="sku", time="ts")
    data_dir, model_dir = root / "tfds", root / "run"
    click_log.Builder(config=config, data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert ClickLog().id_type == "auto"  # what the config above relied on
    # The training command exports when it ends (the export command's own function).
    run = subprocess.run([sys.executable, "-m", "narm_tf.train", "--dataset=click_log/skus",
                          f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--epochs=2",
                          *SMALL, f"--export_base={root / 'exports'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return str(data_dir), str(model_dir), str(root / "exports" / "1")


def test_the_vocabulary_and_run_folder_keep_the_strings(sku_run):
    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir

    data_dir, model_dir, _ = sku_run
    vocabulary = data.Dataset("click_log/skus", data_dir).vocabulary
    assert vocabulary.dtype == object
    assert any(item.startswith("SKU-") for item in vocabulary)
    padded = [item for item in vocabulary if item[0] == "0"]
    assert padded and all(len(item) == 11 for item in padded)  # the zeros are kept
    kept, _ = run_dir.read_vocabulary(model_dir)
    assert kept.tolist() == vocabulary.tolist()


def test_the_export_answers_with_the_logs_own_strings(sku_run, tmp_path):
    """In a clean process through the TF1 loader: the string signature's top-k ids are the
    log's strings and its best item is the Keras model's; a string catalogue has no int64
    signature."""
    import keras

    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir

    data_dir, model_dir, export_dir = sku_run
    dataset = data.Dataset("click_log/skus", data_dir)
    vocabulary, test = dataset.vocabulary, dataset.split("test")
    rows = [[vocabulary[i - 1] for i in row if i > 0] for row in test.prefixes[:8]]
    width = max(map(len, rows))
    batch = np.array([row + [""] * (width - len(row)) for row in rows], dtype=object)
    results = serve_isolated(
        {export_dir: {"top": ("serving_default", {"item_ids": batch.astype(bytes)})}}, tmp_path)
    top = np.vectorize(bytes.decode)(results["top"]["top_k_item_ids"])
    assert set(top.ravel()) <= set(vocabulary)
    assert any(item[0] == "0" and len(item) == 11 for item in top.ravel())
    seen = np.vectorize(bytes.decode)(results["top"]["session_item_ids"])
    assert [[x for x in row if x] for row in seen] == [row[-19:] for row in rows]
    model = keras.models.load_model(os.path.join(model_dir, run_dir.BEST_MODEL), compile=False)
    scores = model.predict(test.prefixes[:8], verbose=0)
    scores = scores["scores"] if isinstance(scores, dict) else scores
    best = np.argmax(np.asarray(scores)[:, 1:], axis=1)  # index 0 (padding) never scores
    assert top[:, 0].tolist() == [vocabulary[i] for i in best]
    assert results[("warmup", export_dir)] and \
        set(results[("warmup", export_dir)]) == {"serving_default", "string_ids_with_options"}
