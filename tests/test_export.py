"""narm_tf.serving (export_lib, signatures, top_k, client_lib, contract) and the commands in
export/: the TF Serving export, checked the way TF Serving loads it.

A small NARM is trained for a few steps and exported twice, under umask 022: from memory with
exclusion off, and from a saved model_dir with exclusion on. A Python process that cannot
import this project (`python -I`, one per test process) loads each export with the TF1 loader
TF Serving uses and runs every signature on the signature_def's tensor names only; its top-k
must match the Keras model's (ids exactly, scores within 1e-5) for known, unknown, empty,
padded and over-long sessions.
"""

import atexit
import os
import pathlib
import pickle
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from narm_tf import export as export_saved_model
from narm_tf.model.narm import attention_model, build_narm
from narm_tf.serving import client_lib, contract, export_lib
from narm_tf.serving.signatures import compact_sessions
from narm_tf.training import run_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_ITEMS, K, MAX_LEN = 194, 20, 19
LONG = 184  # a session of 184 distinct items: 10 of the 194 are left to recommend
UNKNOWN = (7, 8, 999_999_999_999)  # raw ids outside the vocabulary


@pytest.fixture(scope="module")
def trained():
    """(model, vocabulary [N] raw int64 ids, popularity [N]) after a few training steps."""
    keras.utils.set_random_seed(7)
    model = build_narm(NUM_ITEMS, embedding_dim=8, hidden_units=12, max_len=MAX_LEN)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, MAX_LEN + 1, 128)
    x = np.where(np.arange(MAX_LEN) < lengths[:, None], rng.integers(1, NUM_ITEMS + 1,
                                                                     (128, MAX_LEN)), 0)
    model.fit(x.astype(np.int32), rng.integers(1, NUM_ITEMS + 1, 128), batch_size=32, epochs=2,
              verbose=0)
    vocabulary = rng.choice(np.arange(10**10, 10**10 + 10**6), NUM_ITEMS, replace=False)
    popularity = rng.permutation(NUM_ITEMS) * 3 + 1  # distinct counts: no popularity ties
    return model, vocabulary.astype(np.int64), popularity


def write_model_dir(model_dir, model, vocabulary, popularity):
    """A narm_tf.train-shaped output folder of a finished run: best.keras, vocabulary.tsv,
    config.json, best.json, history.csv and metrics.json (narm_tf.training.run_dir's writers)."""
    model_dir.mkdir()
    model.save(model_dir / run_dir.BEST_MODEL)
    run_dir.write_vocabulary(str(model_dir), vocabulary, popularity)
    identity = run_dir.new_identity({"dataset": "test", "epochs": 12, "patience": 5}, "2.0.0",
                                    len(vocabulary))
    run_dir.write_json(run_dir.path(str(model_dir), run_dir.CONFIG), identity)
    run_dir.write_json(run_dir.path(str(model_dir), run_dir.BEST_RECORD),
                       {"run_id": identity["run_id"], "epoch": 2})
    (model_dir / run_dir.HISTORY).write_text("epoch,loss\n" + "".join(
        f"{epoch},1.0\n" for epoch in range(7)))  # early stopping: best 2 + patience 5
    run_dir.write_json(run_dir.path(str(model_dir), run_dir.METRICS),
                       {"run_id": identity["run_id"]})


def killed_copy(model_dir, target):
    """A copy of a finished run folder as if its training was killed after epoch 3 of 12:
    history.csv of 3 epochs, backup/ left, no metrics.json."""
    shutil.copytree(model_dir, target)
    (target / run_dir.METRICS).unlink()
    (target / run_dir.HISTORY).write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.5\n")
    (target / run_dir.BACKUP).mkdir()
    return target


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    """{"plain": version 1, exclude_seen=False, from the model in memory; "exclude": version 2,
    exclude_seen=True, from a model_dir (a saved and reloaded model)}; both under umask 022."""
    model, vocabulary, popularity = trained
    model_dir = tmp_path_factory.mktemp("runs") / "run"
    write_model_dir(model_dir, model, vocabulary, popularity)
    base = str(tmp_path_factory.mktemp("exports") / "narm")
    umask = os.umask(0o022)
    try:
        plain = export_lib.export_model(model, vocabulary, popularity, base, k=K)
        excluding = export_lib.export_from_model_dir(str(model_dir), base, k=K, exclude_seen=True)
    finally:
        os.umask(umask)
    return {"base": base, "plain": plain, "exclude": excluding, "model_dir": model_dir}


def session_rows(vocabulary):
    """Raw sessions as rows with `None` padding anywhere: the request shapes users send."""
    v = [int(x) for x in vocabulary]
    long_session = [v[i % 23] for i in range(30)] + [UNKNOWN[0]]  # 30 clicks, repeats
    return [
        [v[0], v[1], None, None],                                   # known, right-padded
        [None, None, v[2], v[3]],                                   # left-padded
        [v[4], None, v[5], None, v[6]],                             # mid-padded
        [UNKNOWN[0], UNKNOWN[2]],                                   # unknown only
        [],                                                         # empty
        [UNKNOWN[1], v[7], UNKNOWN[0], v[7], v[8]],                 # unknown ids dropped
        long_session,                                               # over-long
        [v[i] for i in range(40)],                                  # over-long, all distinct
        [v[9]],
    ]


def encode(rows, dtype):
    """Rows -> `[batch, width]` request array, `""` or `0` padding."""
    width = max(len(row) for row in rows)
    pad = "" if dtype == "string" else 0
    padded = [[pad if x is None else x for x in row] + [pad] * (width - len(row)) for row in rows]
    if dtype == "string":
        return np.array([[str(x) for x in row] for row in padded], dtype=object).astype(bytes)
    return np.array(padded, np.int64)


def reference(trained, rows, exclude):
    """The Keras model's top-k raw ids, softmax scores, attention and attention share per row
    (numpy), excluding every known item of a row whose `exclude` is set."""
    model, vocabulary, popularity = trained
    index_of = {int(raw): i + 1 for i, raw in enumerate(vocabulary)}
    known = [[index_of[x] for x in row if x in index_of] for row in rows]
    sessions = [items[-MAX_LEN:] for items in known]
    x = np.zeros((len(rows), MAX_LEN), np.int32)
    for r, session in enumerate(sessions):
        x[r, : max(len(session), 1)] = session or [1]  # an empty one: item 1, then replaced
    outputs = {name: np.asarray(value)
               for name, value in attention_model(model)(x, training=False).items()}
    states = np.asarray(keras.Model(model.inputs[0], model.get_layer("gru").output[0])(x))
    logits = outputs["scores"].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    # Each click's share of c_l: |alpha_j| ||h_j|| over the row's total.
    contribution = np.abs(outputs["attention_weights"]) * np.linalg.norm(states, axis=-1) * (x > 0)
    shares = contribution / contribution.sum(1, keepdims=True)
    popular = np.argsort(-popularity, kind="stable")[:K] + 1
    ids, scores, attention, share = [], [], [], []
    for r, session in enumerate(sessions):
        if not session:
            ids.append(vocabulary[popular - 1])
            scores.append(popularity[popular - 1] / popularity.sum())
            attention.append(np.zeros(MAX_LEN))
            share.append(np.zeros(MAX_LEN))
            continue
        ranking = probs[r].copy()
        ranking[0] = -1
        if exclude[r]:
            ranking[known[r]] = -1  # all of them, not only the 19 the model read
        top = np.argsort(-ranking, kind="stable")[:K]
        ids.append(vocabulary[top - 1])
        scores.append(probs[r, top])
        attention.append(outputs["attention_weights"][r])
        share.append(shares[r])
    return np.array(ids), np.array(scores), np.array(attention), np.array(share), sessions


SERVE_SCRIPT = textwrap.dedent('''
    """An isolated interpreter with TF only, as TF Serving would: for each line `jobs results`
    on stdin, runs the pickled jobs (each export loaded into a new graph and session) and
    answers `done` on stdout."""
    import importlib.util, os, pickle, sys, traceback
    # `python -I` drops the script's folder and PYTHONPATH; an editable install of the
    # project (a .pth entry) is dropped here: nothing under the repository stays on sys.path.
    repo = os.path.realpath(sys.argv[1])
    sys.path[:] = [p for p in sys.path
                   if os.path.commonpath([os.path.realpath(p or "."), repo]) != repo]
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2


    def serve(jobs):
        for name in ("narm_tf", "export"):
            assert importlib.util.find_spec(name) is None, f"{name} is importable in the server"
        results = {}
        for export_dir, calls in jobs.items():
            with tf.compat.v1.Session(graph=tf.Graph()) as sess:
                meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
                for key, (signature, inputs) in calls.items():
                    sig = meta.signature_def[signature]
                    feed = {sig.inputs[name].name: value for name, value in inputs.items()}
                    fetch = {name: info.name for name, info in sig.outputs.items()}
                    try:
                        results[key] = sess.run(fetch, feed)
                    except tf.errors.InvalidArgumentError as error:
                        results[key] = {"error": error.message}
                warmup = export_dir + "/assets.extra/tf_serving_warmup_requests"
                signatures = []
                for record in tf.compat.v1.io.tf_record_iterator(warmup):
                    request = prediction_log_pb2.PredictionLog.FromString(
                        record).predict_log.request
                    sig = meta.signature_def[request.model_spec.signature_name]
                    feed = {sig.inputs[name].name: tf.make_ndarray(proto)
                            for name, proto in request.inputs.items()}
                    out = sess.run({n: i.name for n, i in sig.outputs.items()}, feed)
                    assert out["top_k_scores"].shape[0] == len(next(iter(feed.values())))
                    signatures.append(request.model_spec.signature_name)
                results[("warmup", export_dir)] = signatures
        return results


    for line in sys.stdin:
        jobs_path, results_path = line.rstrip("\\n").split("\\t")
        try:
            results = serve(pickle.load(open(jobs_path, "rb")))
        except BaseException:
            results = {"server error": traceback.format_exc()}
        pickle.dump(results, open(results_path, "wb"))
        print("done", flush=True)
''')
_SERVER = {}  # this test process's serving interpreter, started on first use


def _server():
    """The serving interpreter (`python -I`, away from the repository, TF only), started once
    per test process and stopped when it exits: its TensorFlow start is paid once."""
    if _SERVER.get("process") is None or _SERVER["process"].poll() is not None:
        folder = pathlib.Path(tempfile.mkdtemp(prefix="narm-serve-"))
        (folder / "serve.py").write_text(SERVE_SCRIPT)
        log = open(folder / "stderr.log", "w+")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        process = subprocess.Popen([sys.executable, "-I", "serve.py", str(ROOT)], cwd=folder,
                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=log, text=True)
        atexit.register(process.kill)
        _SERVER.update(process=process, log=log)
    return _SERVER["process"], _SERVER["log"]


def serve_isolated(jobs, tmp_path, timeout=240):
    """Runs `{export_dir: {key: (signature, inputs)}}` in the serving interpreter, which
    cannot import this project; returns `{key: outputs}`."""
    with open(tmp_path / "jobs.pkl", "wb") as f:
        pickle.dump(jobs, f)
    process, log = _server()
    process.stdin.write(f"{tmp_path / 'jobs.pkl'}\t{tmp_path / 'results.pkl'}\n")
    process.stdin.flush()
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    answer = process.stdout.readline() if ready else ""
    log.seek(0)
    assert answer == "done\n", f"the serving interpreter did not answer: {log.read()[-3000:]}"
    with open(tmp_path / "results.pkl", "rb") as f:
        results = pickle.load(f)
    assert "server error" not in results, results.get("server error")
    return results


def long_rows(vocabulary):
    """A session of LONG distinct known items (and unknown ids), and a short one."""
    v = [int(x) for x in vocabulary]
    return [v[:LONG // 2] + [UNKNOWN[0]] + v[LONG // 2: LONG], [v[0], v[LONG]]]


@pytest.fixture(scope="module")
def served(exports, trained, tmp_path_factory):
    """`(cases, results)`: every signature of both exports on the test sessions, from the
    isolated process; `cases[case] = (rows, exclude_seen per row)`. Batches whose rows hold at
    most 19 known clicks ("... short") take the serving graph's cheap exclusion path, the
    others its general one. Also the long sessions (`long_rows`), and `exclude_seen` flags
    that do not match the batch."""
    all_rows, long = session_rows(trained[1]), long_rows(trained[1])
    short_rows = [row for row in all_rows if len(row) <= MAX_LEN]
    cases = {"plain": (all_rows, np.zeros(len(all_rows), bool))}
    for suffix, rows in (("", all_rows), (" short", short_rows)):
        cases.update({"exclude" + suffix: (rows, np.ones(len(rows), bool)),
                      "options" + suffix: (rows, np.arange(len(rows)) % 2 == 0)})
    jobs = {exports["plain"]: {}, exports["exclude"]: {}}
    for dtype in ("string", "int64"):
        long_ids = encode(long, dtype)
        single = contract.SIGNATURE_STRING if dtype == "string" else contract.SIGNATURE_INT64
        options = (contract.SIGNATURE_STRING_OPTIONS if dtype == "string"
                   else contract.SIGNATURE_INT64_OPTIONS)
        for case, (rows, flags) in cases.items():
            inputs = {"item_ids": encode(rows, dtype)}
            if case.startswith("options"):
                inputs["exclude_seen"] = flags
            name = "plain" if case.startswith(("plain", "options")) else "exclude"
            jobs[exports[name]][(case, dtype)] = (
                options if case.startswith("options") else single, inputs)
        jobs[exports["exclude"]][("long", dtype)] = (single, {"item_ids": long_ids})
        jobs[exports["plain"]][("long options", dtype)] = (
            options, {"item_ids": long_ids, "exclude_seen": np.array([True, False])})
        for size in (1, 3):
            jobs[exports["plain"]][("mismatch", dtype, size)] = (
                options, {"item_ids": long_ids, "exclude_seen": np.ones(size, bool)})
    return cases, serve_isolated(jobs, tmp_path_factory.mktemp("serve"))


@pytest.mark.parametrize("dtype", ["string", "int64"])
@pytest.mark.parametrize("case", ["plain", "exclude", "options", "exclude short",
                                  "options short"])
def test_served_top_k_matches_keras(served, trained, case, dtype):
    cases, results = served
    rows, exclude = cases[case]
    ids, scores, attention, share, sessions = reference(trained, rows, exclude)
    out = results[(case, dtype)]
    expected_ids = ids.astype(str).astype(bytes) if dtype == "string" else ids
    np.testing.assert_array_equal(out["top_k_item_ids"], expected_ids)
    np.testing.assert_allclose(out["top_k_scores"], scores, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["attention_weights"], attention, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["attention_share"], share, atol=1e-5, rtol=0)
    assert out["top_k_item_ids"].dtype == (object if dtype == "string" else np.int64)
    vocabulary = trained[1]
    for r, session in enumerate(sessions):
        used = out["session_item_ids"][r][: len(session)]
        expected = vocabulary[np.array(session, int) - 1] if session else []
        if dtype == "string":
            expected = [str(x).encode() for x in expected]
        np.testing.assert_array_equal(used, expected)


def test_exclusion_changes_results(served):
    """Guards the exclusion tests against sessions that never meet their own top-k."""
    _, results = served
    plain, excluding = results[("plain", "int64")], results[("exclude", "int64")]
    assert not np.array_equal(plain["top_k_item_ids"], excluding["top_k_item_ids"])


@pytest.mark.parametrize("dtype", ["string", "int64"])
@pytest.mark.parametrize("case", ["long", "long options"])
def test_exclusion_covers_every_known_item_of_a_long_session(served, trained, case, dtype):
    """184 known items on a 194-item catalogue, k=20: the 10 others, then padding.
    Only the row that asks for exclusion is affected."""
    _, vocabulary, _ = trained
    out = results_as_int(served[1][(case, dtype)])
    session = set(vocabulary[:LONG].tolist())
    returned = out["top_k_item_ids"][0]
    assert not set(returned.tolist()) & session
    assert sorted(returned[:10].tolist()) == sorted(vocabulary[LONG:].tolist())
    assert returned[10:].tolist() == [0] * 10
    assert np.all(out["top_k_scores"][0, :10] > 0) and np.all(out["top_k_scores"][0, 10:] == 0)
    assert np.all(np.diff(out["top_k_scores"][0, :10]) <= 0)
    # The second row (2 known items) excludes them only with the export-time setting.
    ids, scores, _, _, _ = reference(trained, long_rows(vocabulary), [True, case == "long"])
    np.testing.assert_array_equal(out["top_k_item_ids"][1], ids[1])
    np.testing.assert_allclose(out["top_k_scores"][1], scores[1], atol=1e-5, rtol=0)


def results_as_int(out):
    """A signature's outputs with string raw ids as int64 (`""` -> 0)."""
    converted = dict(out)
    for name in ("top_k_item_ids", "session_item_ids"):
        if out[name].dtype == object:
            converted[name] = np.array([[int(x or 0) for x in row] for row in out[name]])
    return converted


@pytest.mark.parametrize("dtype", ["string", "int64"])
@pytest.mark.parametrize("size", [1, 3])
def test_exclude_seen_must_match_the_batch(served, dtype, size):
    """A batch of 2 with 1 or 3 flags fails, naming both sizes (not broadcast silently)."""
    error = served[1][("mismatch", dtype, size)]["error"]
    assert "exclude_seen must hold one flag per session" in error
    assert f"got shape] [{size}] [for a batch of] [2]" in error


def test_warmup_requests_replay(served, exports):
    _, results = served
    for name in ("plain", "exclude"):
        assert set(results[("warmup", exports[name])]) == set(contract.SIGNATURES)


def test_layout_and_versions(exports):
    base = pathlib.Path(exports["base"])
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert exports["plain"] == str(base / "1") and exports["exclude"] == str(base / "2")
    for version in ("1", "2"):
        assert (base / version / "saved_model.pb").is_file()
        assert (base / version / "variables" / "variables.index").is_file()
        assert (base / version / "assets" / contract.VOCABULARY_ASSET).is_file()
        assert (base / version / "assets.extra" / contract.WARMUP_FILE).is_file()
    assert contract.next_version(str(base)) == 3


def modes(root):
    """{path relative to root: permission bits} of root and everything below it."""
    root = pathlib.Path(root)
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777
            for p in [root, *root.rglob("*")]}


def test_exports_are_readable_by_other_users(exports):
    """Under umask 022 every folder is 0755 and every file 0644 (mkdtemp: 0700)."""
    for version in ("plain", "exclude"):
        found = modes(exports[version])
        assert len(found) >= 10  # the version folder, 4 folders, 5 files at least
        for path, mode in found.items():
            is_dir = (pathlib.Path(exports[version]) / path).is_dir()
            assert mode == (0o755 if is_dir else 0o644), (version, path, oct(mode))


def test_make_readable_follows_the_umask(tmp_path):
    root = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))  # 0700
    (root / "sub").mkdir(mode=0o700)
    (root / "sub" / "file").write_text("x")
    (root / "sub" / "file").chmod(0o600)
    export_lib.make_readable(str(root), umask=0o027)
    assert modes(root) == {".": 0o750, "sub": 0o750, "sub/file": 0o640}
    umask = os.umask(0o002)
    try:
        assert export_lib.current_umask() == 0o002
        export_lib.make_readable(str(root))
    finally:
        os.umask(umask)
    assert modes(root) == {".": 0o775, "sub": 0o775, "sub/file": 0o664}


def test_vocabulary_asset_is_the_vocabulary(exports, trained):
    text = (pathlib.Path(exports["plain"]) / "assets" / contract.VOCABULARY_ASSET).read_text()
    assert [int(x) for x in text.split()] == trained[1].tolist()


def test_saved_model_cli_lists_signatures(exports):
    proc = subprocess.run(["saved_model_cli", "show", "--dir", exports["plain"], "--all"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks = re.split(r"signature_def\['", proc.stdout)[1:]
    signatures = {block.split("'")[0]: block for block in blocks}
    assert set(contract.SIGNATURES) <= set(signatures)
    for name in contract.SIGNATURES:
        raw = "DT_STRING" if name in (contract.SIGNATURE_STRING,
                                      contract.SIGNATURE_STRING_OPTIONS) else "DT_INT64"
        inputs = {"item_ids": (raw, "(-1, -1)")}
        if name.endswith("with_options"):
            inputs["exclude_seen"] = ("DT_BOOL", "(-1)")
        outputs = {"top_k_item_ids": (raw, f"(-1, {K})"),
                   "top_k_scores": ("DT_FLOAT", f"(-1, {K})"),
                   "attention_weights": ("DT_FLOAT", f"(-1, {MAX_LEN})"),
                   "attention_share": ("DT_FLOAT", f"(-1, {MAX_LEN})"),
                   "session_item_ids": (raw, f"(-1, {MAX_LEN})")}
        assert "Method name is: tensorflow/serving/predict" in signatures[name]
        given, returned = signatures[name].split("following output(s):")
        for text, expected in ((given, inputs), (returned, outputs)):
            found = {name: (dtype, shape) for name, dtype, shape in re.findall(
                r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", text)}
            assert found == expected, (name, text)


def all_op_types(export_dir):
    """Op types of the SavedModel's graph and of every function in its library."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def test_graph_has_only_standard_ops(exports):
    from tensorflow.python.framework import op_def_registry

    ops = all_op_types(exports["exclude"]) | all_op_types(exports["plain"])
    assert "LookupTableFindV2" in ops and "TopKV2" in ops  # the walk sees the functions
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
    assert not unknown, f"ops outside TF's standard registry: {unknown}"


def test_interrupted_export_leaves_no_version(trained, tmp_path, monkeypatch):
    model, vocabulary, popularity = trained
    base = tmp_path / "narm"

    def interrupted(export_dir, *args, **kwargs):
        assert (pathlib.Path(export_dir) / "saved_model.pb").exists()  # midway: model written
        raise KeyboardInterrupt

    monkeypatch.setattr(export_lib, "write_warmup_requests", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_lib.export_model(model, vocabulary, popularity, str(base), k=K)
    assert list(base.iterdir()) == []
    assert contract.next_version(str(base)) == 1


def test_killed_export_leaves_no_version(trained, tmp_path):
    """A SIGKILL midway leaves only a hidden temporary folder, never a version folder."""
    model, vocabulary, popularity = trained
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "vocabulary.npy", vocabulary)
    np.save(tmp_path / "popularity.npy", popularity)
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import keras, numpy as np
        import narm_tf.model.narm
        from narm_tf.serving import export_lib
        export_lib.write_warmup_requests = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        model = keras.models.load_model("model.keras", compile=False)
        export_lib.export_model(model, np.load("vocabulary.npy"), np.load("popularity.npy"),
                                "narm")
    ''')
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = os.listdir(tmp_path / "narm")
    assert left and all(name.startswith(".tmp-") for name in left)
    assert contract.next_version(str(tmp_path / "narm")) == 1


def test_export_of_an_unfinished_run_is_refused_naming_what_is_missing(exports, tmp_path):
    """The command exits non-zero, naming the missing metrics.json, the epochs done and the
    resume, and writes nothing."""
    killed = killed_copy(exports["model_dir"], tmp_path / "killed")
    base = tmp_path / "narm"
    result = subprocess.run(
        [sys.executable, "-m", "export.export_saved_model", f"--model_dir={killed}",
         f"--export_base={base}"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"export: {killed} holds an unfinished training run (")
    assert "no metrics.json, the file a run writes last: training stopped after epoch 3 of 12 "\
           "(history.csv). Rerun the narm_tf.train command that wrote it (same --model_dir " \
           "and flags) to finish it: it resumes where it stopped; or pass --allow_unfinished " \
           "to use its best.keras as it is" in message
    assert not base.exists()


def test_allow_unfinished_exports_and_the_record_says_so(exports, trained, tmp_path):
    """--allow_unfinished exports the run's best.keras; export.json records the opt-in and
    what the run lacked. A finished run's export records `finished`, one from memory no run."""
    killed = killed_copy(exports["model_dir"], tmp_path / "killed")
    exported = export_lib.export_from_model_dir(str(killed), str(tmp_path / "narm"),
                                                allow_unfinished=True)
    assert exported == str(tmp_path / "narm" / "1")
    assert (pathlib.Path(exported) / "saved_model.pb").is_file()
    source = export_lib.read_record(exported)["source"]
    config = run_dir.read_json(str(killed), run_dir.CONFIG)
    assert source["allow_unfinished"] is True and source["finished"] is False
    assert source["run_id"] == config["run_id"] and source["model"] == run_dir.BEST_MODEL
    assert source["model_dir"] == str(killed)
    assert len(source["missing"]) == 1
    assert source["missing"][0].startswith("no metrics.json")
    finished = export_lib.read_record(exports["exclude"])
    assert finished["source"]["finished"] is True
    assert finished["source"]["allow_unfinished"] is False and finished["exclude_seen"] is True
    plain = export_lib.read_record(exports["plain"])
    assert plain["source"] is None and plain["k"] == K and plain["items"] == NUM_ITEMS


def test_two_exports_at_once_get_two_complete_versions(exports, tmp_path, monkeypatch):
    """Two threads write a version into one base (`write_new_version`, every export's
    versioned write; each writes a real SavedModel) and both pick version 1 at the same
    moment: one gets it, the other takes 2 (before: one died renaming onto the other's
    folder). Both versions are complete; no temporary folder is left."""
    import threading

    base, picked = str(tmp_path / "narm"), threading.Barrier(2, timeout=60)
    next_version, first = contract.next_version, threading.local()

    def next_version_at_the_same_time(export_base):
        number = next_version(export_base)
        if not getattr(first, "done", False):
            first.done = True
            picked.wait()  # both threads have picked `number` before either claims it
        return number

    monkeypatch.setattr(contract, "next_version", next_version_at_the_same_time)
    results, errors = [], []

    def export():
        try:
            results.append(export_lib.write_new_version(base, None, lambda temp_dir: (
                shutil.copytree(exports["plain"], temp_dir, dirs_exist_ok=True))))
        except BaseException as error:  # noqa: BLE001  (reported by the assert below)
            errors.append(error)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert sorted(results) == [os.path.join(base, "1"), os.path.join(base, "2")]
    assert sorted(os.listdir(base)) == ["1", "2"]
    for version in results:
        assert sorted(modes(version)) == sorted(modes(exports["plain"]))


def test_a_version_taken_meanwhile_is_not_overwritten(tmp_path):
    """claim_version: a given version that exists fails naming it and keeps the folder; with
    no version the next free one is taken, never an empty folder someone made."""
    base = tmp_path / "narm"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_text("another export")
    (base / "2").mkdir()  # empty: rename(2) would replace it
    folder = base / ".tmp-export-x"
    folder.mkdir()
    (folder / "saved_model.pb").write_text("this export")
    with pytest.raises(FileExistsError, match=f"{base / '1'} exists \\(another export took "
                                              "version 1\\): pass another --version or none"):
        export_lib.claim_version(str(folder), str(base), 1)
    assert (folder / "saved_model.pb").exists()
    assert export_lib.claim_version(str(folder), str(base)) == str(base / "3")
    assert (base / "3" / "saved_model.pb").read_text() == "this export"
    assert (base / "1" / "saved_model.pb").read_text() == "another export"


def test_existing_version_is_never_overwritten(trained, exports):
    model, vocabulary, popularity = trained
    with pytest.raises(FileExistsError):
        export_lib.export_model(model, vocabulary, popularity, exports["base"], version=1)
    assert sorted(os.listdir(exports["base"])) == ["1", "2"]


def test_compact_sessions_keeps_last_known_clicks_in_order():
    indices = tf.constant([[0, 5, 0, 6, 7], [0, 0, 0, 0, 0], [1, 2, 3, 4, 0]], tf.int64)
    np.testing.assert_array_equal(compact_sessions(indices, max_len=3).numpy(),
                                  [[5, 6, 7], [0, 0, 0], [2, 3, 4]])
    empty = tf.zeros([2, 0], tf.int64)
    assert compact_sessions(empty, max_len=3).numpy().tolist() == [[0, 0, 0], [0, 0, 0]]


def test_export_from_model_dir(trained, exports, tmp_path):
    """The model_dir's files read back as written; its export ("exclude", checked against the
    model in memory above) is the next version. A folder without them is refused."""
    assert exports["exclude"] == os.path.join(exports["base"], "2")
    with pytest.raises(run_dir.RunFolderError, match="no config.json"):
        export_lib.export_from_model_dir(str(tmp_path), str(tmp_path / "narm"))
    # A model of another run beside this run's vocabulary (a reused folder) is refused.
    foreign = tmp_path / "foreign"
    shutil.copytree(exports["model_dir"], foreign)
    run_dir.write_json(run_dir.path(str(foreign), run_dir.BEST_RECORD), {"run_id": "older"})
    with pytest.raises(run_dir.RunFolderError, match="best.keras belongs to run older"):
        export_lib.export_from_model_dir(str(foreign), str(tmp_path / "narm"))
    assert not (tmp_path / "narm").exists()


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_is_refused_up_front(trained, tmp_path, k):
    model, vocabulary, popularity = trained
    with pytest.raises(ValueError, match=rf"k \(--k\).* must be >= 1, got {k}"):
        export_lib.export_model(model, vocabulary, popularity, str(tmp_path / "narm"), k=k)
    assert not (tmp_path / "narm").exists()


@pytest.mark.parametrize("argument,message", [
    ("--k=0", "flag --k=0: 0 is not a positive integer"),
    ("--version=-1", "flag --version=-1: -1 is not a non-negative integer")])
def test_command_line_bounds(argument, message):
    from absl import flags

    flag_values = flags.FlagValues()
    export_saved_model.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError) as raised:
        flag_values(["export_saved_model", "--model_dir=run", argument])
    assert str(raised.value) == message


def test_mismatched_vocabulary_is_refused(trained, tmp_path):
    model, vocabulary, popularity = trained
    with pytest.raises(ValueError, match="vocabulary"):
        export_lib.export_model(model, vocabulary[:-1], popularity[:-1], str(tmp_path / "narm"))
    assert [p for p in (tmp_path / "narm").iterdir()] == []


def test_client_builds_padded_requests():
    request = client_lib.build_request([["11", "12"], ["13"]], model_name="narm")
    assert request.model_spec.name == "narm"
    assert request.model_spec.signature_name == "serving_default"
    assert set(request.inputs) == {"item_ids"}
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["item_ids"]),
                                  [[b"11", b"12"], [b"13", b""]])
    request = client_lib.build_request([[11, 12], []], exclude_seen=True, int64=True,
                                   model_version=3)
    assert request.model_spec.signature_name == "int64_ids_with_options"
    assert request.model_spec.version.value == 3
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["item_ids"]), [[11, 12], [0, 0]])
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["exclude_seen"]), [True, True])
    empty = client_lib.build_request([[]])
    assert tf.make_ndarray(empty.inputs["item_ids"]).shape == (1, 0)


def test_client_round_trip_through_a_grpc_prediction_service(exports, trained):
    """The client against an in-process PredictionService that runs the export's signatures."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    loaded = tf.saved_model.load(exports["plain"])

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            signature = loaded.signatures[request.model_spec.signature_name]
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for name, value in signature(**inputs).items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        vocabulary = trained[1]
        session = [str(vocabulary[3]), "12345", str(vocabulary[4])]
        request = client_lib.build_request([session], exclude_seen=True)
        outputs = client_lib.parse_response(client_lib.predict(f"localhost:{port}", request))
    finally:
        server.stop(None)
    ids, scores, _, _, _ = reference(trained, [[int(x) for x in session]], [True])
    np.testing.assert_array_equal(outputs["top_k_item_ids"], ids.astype(str))
    np.testing.assert_allclose(outputs["top_k_scores"], scores, atol=1e-5, rtol=0)
