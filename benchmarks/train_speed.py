"""Training speed of NARM on a DIGINETICA-sized problem, against the decoder's floor.

Prints steady-state training examples/s and peak memory (process peak RSS) of `model.fit` steps
(43,097 items, batch 512, D=50, H=100, random right-padded prefixes of length 1..19), and the time
of the same-shaped `[512, 50] x [50, 43098]` matmul + softmax cross-entropy + gradient alone: the
floor the decoder imposes on every step (the fastest, under XLA, of TF's fused cross-entropy
op, of logsumexp minus the target logit left to autodiff, and of `narm_tf.model.narm.cross_entropy`
itself). Training settings:
- `fit`: every batch 19 wide, what `narm_tf.train` runs by default (`compile_narm`, no
  metrics on training batches);
- `fit train_metrics`: the same with Recall@20/MRR@20 on every training batch (`--train_metrics`);
- `fit steps_per_execution=1`: the same with one call into the compiled step per batch (Keras'
  default; `narm_tf.train` runs 16 per call, `--steps_per_execution`);
- `fit keras_gru`: the same model with `keras.layers.GRU`'s own loop in place of `NarmGRU`'s
  (which skips padded steps and writes its gradient out, `narm_tf.model.gru`);
- `fit mixed_bfloat16`: `fit` under the `mixed_bfloat16` dtype policy (`--mixed_precision`;
  the embedding, scores and loss stay float32; the GRU is then Keras' own loop);
- `fit 2 workers`: `narm_tf.training.distribute.fit` under MultiWorkerMirroredStrategy, two local
  worker processes on 127.0.0.1, each pinned to one core, each fed half of every global batch
  (what `narm_tf.train` runs when TF_CONFIG names a cluster); peak RSS per worker;
- `fit grouped`: the batches of `--length_buckets` (`make_dataset` with
  `DEFAULT_LENGTH_BUCKETS`: prefixes of similar length together, each batch cut to its bucket
  width), timed over a whole epoch of 64 batches after a first epoch that compiles every width.
Each setting runs in its own subprocess, so peak memory and XLA caches do not leak from one to
the next. This machine's speed drifts by 10-20% over tens of seconds, so every setting runs once
per round, rounds follow one another, and each round's ratio divides its `fit` by its own
floor: the figures printed are medians over rounds (with their range).

    python benchmarks/train_speed.py                   # 3 rounds of floors + training settings
    python benchmarks/train_speed.py --jit=both        # also the non-XLA steps
    python benchmarks/train_speed.py --num_items=2000 --steps=5 --rounds=1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=43097)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--embedding_dim", type=int, default=50)
    parser.add_argument("--hidden_units", type=int, default=100)
    parser.add_argument("--max_len", type=int, default=19)
    parser.add_argument("--steps", type=int, default=64, help="timed steps")
    parser.add_argument("--warmup", type=int, default=16, help="untimed steps (tracing, XLA)")
    parser.add_argument("--jit", choices=("default", "true", "false", "both"), default="default")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every setting")
    parser.add_argument("--lengths", choices=("uniform", "geometric"), default="uniform",
                        help="prefix lengths: uniform 1..max_len, or geometric (mean 4.5)")
    parser.add_argument("--settings", default="",
                        help="comma-separated training settings to time (default: all), "
                             "e.g. fit,fit_keras_gru")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # child: one setting
    return parser.parse_args(argv)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


GEOMETRIC_P = 0.22  # lengths min(Geometric(p), max_len): mean 4.5, as real logs' prefixes


def random_prefixes(rng, num_items: int, batch_size: int, max_len: int,
                    lengths: str = "uniform"):
    """Right-padded item ids `[batch, max_len]` and targets `[batch]`; prefix lengths uniform
    in 1..max_len, or `geometric` (most prefixes short, mean about 4.5, as in real logs)."""
    import numpy as np

    if lengths == "geometric":
        lengths = np.minimum(rng.geometric(GEOMETRIC_P, size=batch_size), max_len)
    else:
        lengths = rng.integers(1, max_len + 1, size=batch_size)
    items = rng.integers(1, num_items + 1, size=(batch_size, max_len))
    items = np.where(np.arange(max_len)[None, :] < lengths[:, None], items, 0).astype("int32")
    return items, rng.integers(1, num_items + 1, size=batch_size).astype("int32")


def measure_floor(args: argparse.Namespace, jit_compile: bool,
                  formulation: str = "xent") -> dict:
    """Seconds per `[b, D] x [D, N + 1]` matmul + softmax cross-entropy + gradients (q and E),
    with TF's fused cross-entropy op (`xent`), as logsumexp minus the target logit left to
    autodiff (`logsumexp`), or with the model's own loss (`model`: `cross_entropy`)."""
    import numpy as np
    import tensorflow as tf

    from narm_tf.model.narm import cross_entropy

    rng = np.random.default_rng(0)
    query = tf.Variable(rng.normal(size=(args.batch_size, args.embedding_dim)).astype("float32"))
    table = tf.Variable(
        rng.normal(size=(args.num_items + 1, args.embedding_dim)).astype("float32") * 0.05)
    labels = tf.constant(rng.integers(1, args.num_items + 1, size=args.batch_size), tf.int32)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            logits = tf.matmul(query, table, transpose_b=True)
            if formulation == "logsumexp":
                target = tf.gather(logits, labels[:, None], batch_dims=1)[:, 0]
                loss = tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - target)
            elif formulation == "model":
                loss = tf.reduce_mean(cross_entropy(labels, logits))
            else:
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, [query, table])
        return loss, grads

    for _ in range(args.warmup):
        step()[0].numpy()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()[0].numpy()
    seconds = (time.perf_counter() - start) / args.steps
    return {"setting": f"floor {formulation} jit={jit_compile}", "seconds_per_step": seconds,
            "cpu_seconds_per_step": (time.process_time() - cpu_start) / args.steps,
            "peak_rss_mb": _peak_rss_mb()}


def measure_fit(args: argparse.Namespace, jit_compile, train_metrics: bool = False,
                steps_per_execution: int | None = None, keras_gru: bool = False,
                policy: str = "float32") -> dict:
    """Seconds per `model.fit` step (NARM hybrid/bilinear, compile_narm), after warm-up, on
    fixed `[batch, max_len]` batches."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batches = [random_prefixes(rng, args.num_items, args.batch_size, args.max_len, args.lengths)
               for _ in range(8)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    dataset = (tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache()
               .repeat().prefetch(2))
    name = "fit train_metrics" if train_metrics else "fit"
    if steps_per_execution:
        name += f" steps_per_execution={steps_per_execution}"
    if keras_gru:
        name += " keras_gru"
    if policy != "float32":
        import keras

        keras.mixed_precision.set_global_policy(policy)  # this child builds one model
        name += f" {policy}"
    return _timed_fit(args, jit_compile, dataset, args.warmup, args.steps,
                      f"{name} jit_compile={jit_compile}", train_metrics=train_metrics,
                      steps_per_execution=steps_per_execution, keras_gru=keras_gru)


def measure_grouped_fit(args: argparse.Namespace, jit_compile) -> dict:
    """Seconds per `model.fit` step over whole epochs of `make_dataset(length_buckets=...)`:
    the training path's batches, grouped by length and cut to their bucket width."""
    import numpy as np

    from narm_tf.data import dataset as data
    from narm_tf.data.examples import Prefixes

    rng = np.random.default_rng(0)
    steps = data.GROUP_POOL  # one pool: every width in its usual share
    items, labels = random_prefixes(rng, args.num_items, args.batch_size * steps, args.max_len,
                                    args.lengths)
    n = len(labels)
    prefixes = Prefixes(items, labels.astype(np.int64), np.count_nonzero(items, axis=1),
                        np.arange(n))
    dataset = data.make_dataset(prefixes, args.batch_size, shuffle=True, repeat=True,
                                length_buckets=data.DEFAULT_LENGTH_BUCKETS)
    # The first epoch compiles every width; the second is timed whole.
    return _timed_fit(args, jit_compile, dataset, steps, steps,
                      f"fit grouped jit_compile={jit_compile}")


def _timed_fit(args, jit_compile, dataset, warmup: int, steps: int, setting: str,
               train_metrics: bool = False, steps_per_execution: int | None = None,
               keras_gru: bool = False) -> dict:
    import keras

    from narm_tf.model import narm as narm_model
    from narm_tf.model.narm import build_narm, compile_narm

    if keras_gru:
        # This child process builds one model: the same layer with Keras' own loop.
        narm_model.NarmGRU = keras.layers.GRU
    keras.utils.set_random_seed(0)
    model = build_narm(args.num_items, args.embedding_dim, args.hidden_units)
    kwargs = {} if jit_compile == "default" else {"jit_compile": jit_compile}
    if steps_per_execution:
        kwargs["steps_per_execution"] = steps_per_execution
    compile_narm(model, train_metrics=train_metrics, **kwargs)
    rss_before = _peak_rss_mb()

    class StepTimer(keras.callbacks.Callback):
        """Times at the end of each call into the train step (`steps_per_execution` batches);
        Keras passes the index of the call's last batch."""

        def __init__(self):
            super().__init__()
            self.ends = []  # (batch index, wall time, process CPU time)

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append((batch, time.perf_counter(), time.process_time()))

    timer = StepTimer()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer])
    start = next(end for end in timer.ends if end[0] >= warmup - 1)  # after the compiling call
    stop = timer.ends[-1]
    timed = stop[0] - start[0]
    if timed < 1:
        raise ValueError(f"--warmup={warmup} --steps={steps} leave no timed call into the train "
                         f"step ({len(timer.ends)} call(s) of up to {model.steps_per_execution} "
                         f"batches): raise --steps")
    seconds = (stop[1] - start[1]) / timed
    cpu_seconds = (stop[2] - start[2]) / timed
    return {"setting": setting, "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds,
            "examples_per_second": args.batch_size / seconds,
            "peak_rss_mb": _peak_rss_mb(), "rss_before_fit_mb": rss_before}


def measure_two_workers(args: argparse.Namespace, jit_compile) -> dict:
    """Runs two MultiWorkerMirroredStrategy workers (1 core each) and combines their timings."""
    import socket

    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = ",".join(str(sock.getsockname()[1]) for sock in sockets)
    for sock in sockets:
        sock.close()
    workers = [_start_child(args, f"worker:{index}:{ports}") for index in range(2)]
    results = [json.loads(_finish_child(worker).strip().splitlines()[-1]) for worker in workers]
    seconds = max(r["seconds_per_step"] for r in results)
    return {"setting": "fit 2 workers (1 core each)", "seconds_per_step": seconds,
            "cpu_seconds_per_step": sum(r["cpu_seconds_per_step"] for r in results),
            "examples_per_second": args.batch_size / seconds,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "peak_rss_mb_per_worker": [r["peak_rss_mb"] for r in results]}


def run_worker(args: argparse.Namespace, spec: str) -> dict:
    """One worker of `measure_two_workers`: `spec` = 'INDEX:PORT0,PORT1'."""
    index, ports = spec.split(":")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports.split(",")]},
        "task": {"type": "worker", "index": int(index)}})
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[int(index) % len(cores)]})
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from narm_tf.model.narm import build_narm, compile_narm
    from narm_tf.training import distribute

    strategy = distribute.make_strategy()
    rng = np.random.default_rng(0)
    per_worker = args.batch_size // 2
    x, y = random_prefixes(rng, args.num_items, per_worker * 8, args.max_len, args.lengths)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_narm(args.num_items, args.embedding_dim, args.hidden_units)
        compile_narm(model)
    times = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append((batch, time.perf_counter(), time.process_time()))

    def dataset_fn(context):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(per_worker).cache().repeat()

    log_every = 4
    distribute.fit(model, strategy, dataset_fn, epochs=1,
                   steps_per_epoch=args.warmup + args.steps, callbacks=[StepTimer()],
                   log_every=log_every, verbose=0)
    start = next(t for t in times if t[0] >= args.warmup - 1)
    stop = times[-1]
    steps = stop[0] - start[0]
    return {"setting": f"worker {index}", "seconds_per_step": (stop[1] - start[1]) / steps,
            "cpu_seconds_per_step": (stop[2] - start[2]) / steps,
            "peak_rss_mb": _peak_rss_mb()}


def _child_argv(args: argparse.Namespace, setting: str) -> tuple[list, dict]:
    argv = [sys.executable, os.path.abspath(__file__), f"--run={setting}"]
    for name in ("num_items", "batch_size", "embedding_dim", "hidden_units", "max_len",
                 "steps", "warmup", "lengths"):
        argv.append(f"--{name}={getattr(args, name)}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return argv, env


def _start_child(args: argparse.Namespace, setting: str) -> subprocess.Popen:
    argv, env = _child_argv(args, setting)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _finish_child(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=1800)
    if process.returncode:
        raise RuntimeError(f"{process.args[2]} failed:\n{err[-3000:]}")
    return out


def _run_child(args: argparse.Namespace, setting: str) -> dict:
    out = _finish_child(_start_child(args, setting))
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = _parse_args(argv)
    if args.run:
        kind, _, value = args.run.partition(":")
        jit = {"true": True, "false": False}.get(value, value)
        if kind == "worker":
            print(json.dumps(run_worker(args, value)))
            return
        measure = {"floor": measure_floor, "fit": measure_fit, "grouped": measure_grouped_fit,
                   "floor_logsumexp": lambda a, j: measure_floor(a, j, "logsumexp"),
                   "floor_model": lambda a, j: measure_floor(a, j, "model"),
                   "fit_train_metrics": lambda a, j: measure_fit(a, j, train_metrics=True),
                   "fit_per_batch": lambda a, j: measure_fit(a, j, steps_per_execution=1),
                   "fit_keras_gru": lambda a, j: measure_fit(a, j, keras_gru=True),
                   "fit_bf16": lambda a, j: measure_fit(a, j, policy="mixed_bfloat16"),
                   "fit_2workers": measure_two_workers}
        result = measure[kind](args, jit)
        print(json.dumps(result))
        return
    fits = {"default": ["default"], "true": [True], "false": [False], "both": [True, False]}
    floor_settings = ["floor:true", "floor_logsumexp:true", "floor_model:true"]
    if args.jit in ("false", "both"):
        floor_settings.append("floor:false")
    kinds = [kind for kind in ("fit", "fit_keras_gru", "fit_bf16", "fit_2workers",
                               "fit_train_metrics", "fit_per_batch", "grouped")
             if not args.settings or kind in args.settings.split(",")]
    fit_settings = [f"{kind}:{str(j).lower()}" for j in fits[args.jit] for kind in kinds]
    print(f"NARM train speed: {args.num_items} items, batch {args.batch_size}, "
          f"D={args.embedding_dim}, H={args.hidden_units}, prefixes 1..{args.max_len} "
          f"({args.lengths}), "
          f"{args.steps} timed steps after {args.warmup}, {args.rounds} round(s); "
          f"cores={os.cpu_count()}, load average at start={os.getloadavg()[0]:.2f}")
    rounds = []  # per round: setting name -> result, plus the round's floor
    for number in range(1, args.rounds + 1):
        results = [_run_child(args, setting) for setting in floor_settings + fit_settings]
        floors = [r for r in results if r["setting"].startswith("floor")]
        floor = min(r["seconds_per_step"] for r in floors)
        cpu_floor = min(r["cpu_seconds_per_step"] for r in floors)
        print(f"round {number}: floor {1e3 * floor:.1f} ms  " + "  ".join(
            f"{r['setting']} {1e3 * r['seconds_per_step']:.1f}" for r in results
            if not r["setting"].startswith("floor")), flush=True)
        rounds.append(({r["setting"]: r for r in results}, floor, cpu_floor))

    def spread(values, fmt):
        return (f"{fmt.format(statistics.median(values))} "
                f"[{fmt.format(min(values))}-{fmt.format(max(values))}]")

    print(f"\nmedian [range] over {args.rounds} round(s); ratios against the same round's floor")
    for setting in rounds[0][0]:
        per_round = [(r[setting], floor, cpu_floor) for r, floor, cpu_floor in rounds]
        ms = [1e3 * r["seconds_per_step"] for r, _, _ in per_round]
        cpu_ms = [1e3 * r["cpu_seconds_per_step"] for r, _, _ in per_round]
        line = (f"{setting:<48} {spread(ms, '{:.1f}')} ms/step  "
                f"CPU time {spread(cpu_ms, '{:.0f}')} ms  "
                f"peak RSS {max(r['peak_rss_mb'] for r, _, _ in per_round):5.0f} MB")
        if "examples_per_second" in per_round[0][0]:
            rates = [r["examples_per_second"] for r, _, _ in per_round]
            ratios = [r["seconds_per_step"] / floor for r, floor, _ in per_round]
            cpu_ratios = [r["cpu_seconds_per_step"] / cpu for r, _, cpu in per_round]
            line += (f"\n{'':<48} {spread(rates, '{:.0f}')} examples/s  "
                     f"{spread(ratios, '{:.2f}')}x floor  "
                     f"(CPU time {spread(cpu_ratios, '{:.2f}')}x)")
        print(line)
    print("floor = the fastest floor formulation of the same round. CPU time = process CPU "
          "seconds per step over all threads: steadier than wall time when other processes "
          "share the cores.")
    print(f"load average at end={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
