"""Wall time and peak memory of building `yoochoose1_64` from a YOOCHOOSE-sized raw file.

Generates a raw `yoochoose-clicks.dat` shaped like the real one (33M clicks, 9M sessions, 53k
items, six months, Zipf item popularity) with vectorized numpy, then builds it through the real
TFDS builder in a child process and reports the wall time, clicks/s and peak RSS.
Target on the 2-core dev machine (in memory): < 15 min and < 8 GiB.

`--paths=memory,beam` also builds on Beam (`--beam_pipeline_options`: DirectRunner, 2 worker
processes) and reports the peak RSS of the launching process and of each worker (VmHWM of
its descendant processes, sampled every 0.2 s), then checks both builds are the same dataset.

  python benchmarks/preprocess_speed.py                    # full size, in memory
  python benchmarks/preprocess_speed.py --clicks=3300000 --paths=memory,beam
  python benchmarks/preprocess_speed.py --cache_dir=/tmp/yc_bench  # reuse the raw file
  python benchmarks/preprocess_speed.py --id_type=string  # the ids read as strings (SKUs)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from narm_tf import synthetic  # noqa: E402

FULL_CLICKS = 33_003_944
FULL_SESSIONS = 9_249_729
FULL_ITEMS = 52_739
DAYS = 183

flags.DEFINE_integer("clicks", FULL_CLICKS, "Raw clicks to generate (sessions, items scale).")
flags.DEFINE_string("cache_dir", "", "Keep the raw file here and reuse it (default: temp dir).")
flags.DEFINE_string("config", "yoochoose1_64", "Builder config to build.")
flags.DEFINE_list("paths", ["memory"], "Preprocessing paths to build: memory, beam.")
flags.DEFINE_integer("beam_workers", 2, "DirectRunner worker processes of the beam path.")
flags.DEFINE_enum("id_type", "", ["", "auto", "int", "string"],
                  "Read the ids as this id_type instead of the config's own (int for YOOCHOOSE): "
                  "string measures the path of a log of SKUs on the same clicks.")
FLAGS = flags.FLAGS


def generate_raw(path: str, num_clicks: int, seed: int = 0) -> None:
    """Writes a YOOCHOOSE-shaped click file of about `num_clicks` rows, vectorized."""
    rng = np.random.default_rng(seed)
    scale = num_clicks / FULL_CLICKS
    num_sessions = max(int(FULL_SESSIONS * scale), 10)
    num_items = max(int(FULL_ITEMS * min(1.0, scale ** 0.5)), 10)
    lengths = rng.geometric(num_sessions / num_clicks, num_sessions)  # mean clicks/session.
    total = int(lengths.sum())
    popularity = np.cumsum(1.0 / np.arange(1, num_items + 1) ** 0.9)
    items = np.searchsorted(popularity / popularity[-1], rng.random(total))
    raw_ids = 214_500_000 + rng.choice(10_000_000, size=num_items, replace=False)
    starts = np.sort(rng.integers(0, DAYS * synthetic.MS_PER_DAY, num_sessions))
    session_of_click = np.repeat(np.arange(num_sessions), lengths)
    gaps = rng.integers(1_000, 120_000, total)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[first], lengths)
    times = synthetic.START_MS + starts[session_of_click] + elapsed
    synthetic.write_clicks(path, session_of_click + 1, times, raw_ids[items])


BUILD_CODE = """
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from tfds_builders.click_log.click_log_dataset_builder import ClickLogConfig
from tfds_builders.yoochoose.yoochoose_dataset_builder import Builder
config = ClickLogConfig(name={name!r}, base={base!r}, **{changes!r}) if {changes!r} else {base!r}
builder = Builder(config=config, data_dir={data_dir!r})
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
    manual_dir={manual_dir!r}, beam_options=PipelineOptions({options!r}) if {options!r} else None))
"""


def build(manual_dir: str, data_dir: str, config: str, path: str = "memory"):
    """Builds in a child process; returns (wall seconds, launcher peak RSS GiB, [worker peak
    RSS GiB]): the child's, and its descendants' (Beam workers) from /proc every 0.2 s."""
    options = [] if path == "memory" else [f"--direct_num_workers={FLAGS.beam_workers}",
                                           "--direct_running_mode=multi_processing"]
    changes = {"id_type": FLAGS.id_type} if FLAGS.id_type else {}
    code = BUILD_CODE.format(name=dataset_config(config), base=config, changes=changes,
                             data_dir=data_dir, manual_dir=manual_dir, options=options)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    peaks, done = {}, threading.Event()
    sampler = threading.Thread(target=_sample_peaks, args=(child.pid, peaks, done))
    sampler.start()
    child.wait()
    done.set()
    sampler.join()
    wall = time.time() - start
    if child.returncode:
        raise SystemExit(f"build ({path}) failed with exit code {child.returncode}")
    launcher = peaks.pop(child.pid, 0) / 2 ** 20
    workers = sorted((kib / 2 ** 20 for kib in peaks.values()), reverse=True)
    return wall, launcher, workers


def _descendants(root: int) -> list[int]:
    """Pids of all descendants of `root` (children of any of its threads), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _sample_peaks(root: int, peaks: dict, done: threading.Event) -> None:
    """{pid: peak RSS KiB (VmHWM)} of `root` and its descendants until `done`."""
    while not done.is_set():
        for pid in [root, *_descendants(root)]:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if not f.read().startswith("python"):  # Beam workers are Python
                        continue
                with open(f"/proc/{pid}/status") as f:
                    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
            except (OSError, StopIteration):
                continue
            peaks[pid] = max(peaks.get(pid, 0), hwm)
        done.wait(0.2)


def dataset_config(config: str) -> str:
    """The built config's name: the named config, or with `_<id_type>` when --id_type is set."""
    return f"{config}_{FLAGS.id_type}" if FLAGS.id_type else config


def same_dataset(data_dirs: dict, config: str) -> bool:
    """Both builds hold the same examples (in order), vocabulary and statistics."""
    code = ("import hashlib, json, sys, tensorflow_datasets as tfds\n"
            "b = tfds.builder_from_directory(sys.argv[1])\n"
            "out = {k: b.info.metadata[k] for k in ('vocabulary', 'statistics')}\n"
            "for s in ('train', 'validation', 'test'):\n"
            "    out[s] = [(e['prefix'].tolist(), int(e['label']), int(e['length']),\n"
            "               int(e['session_id'])) for e in tfds.as_numpy(b.as_dataset(s))]\n"
            "print(hashlib.sha256(json.dumps(out).encode()).hexdigest())\n")
    digests = set()
    for data_dir in data_dirs.values():
        version_dir = os.path.join(data_dir, "yoochoose", dataset_config(config))
        version_dir = os.path.join(version_dir, os.listdir(version_dir)[0])
        run = subprocess.run([sys.executable, "-c", code, version_dir], capture_output=True,
                             text=True, check=True)
        digests.add(run.stdout.strip().splitlines()[-1])
    return len(digests) == 1


def main(argv) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        manual_dir = FLAGS.cache_dir or os.path.join(tmp, "manual")
        os.makedirs(manual_dir, exist_ok=True)
        raw = os.path.join(manual_dir, synthetic.CLICKS_FILE)
        stamp = os.path.join(manual_dir, f"clicks={FLAGS.clicks}")
        if not os.path.exists(stamp):
            start = time.time()
            generate_raw(raw, FLAGS.clicks)
            open(stamp, "w").close()
            print(f"generated {raw} ({os.path.getsize(raw) / 2**30:.2f} GiB) "
                  f"in {time.time() - start:.0f} s", flush=True)
        data_dirs = {}
        for path in FLAGS.paths:
            data_dirs[path] = os.path.join(tmp, f"tfds_{path}")
            wall, launcher, workers = build(manual_dir, data_dirs[path], FLAGS.config, path)
            shown = ", ".join(f"{peak:.2f}" for peak in workers) or "none"
            print(f"{path}: build {FLAGS.config} from {FLAGS.clicks:,} clicks: wall {wall:.0f} s "
                  f"({wall / 60:.1f} min), {FLAGS.clicks / wall:,.0f} clicks/s, peak RSS "
                  f"launcher {launcher:.2f} GiB, workers [{shown}] GiB", flush=True)
        if len(data_dirs) > 1:
            print(f"same dataset on every path: {same_dataset(data_dirs, FLAGS.config)}")


if __name__ == "__main__":
    app.run(main)
