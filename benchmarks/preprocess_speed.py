"""Wall time and peak memory of building `yoochoose1_64` from a YOOCHOOSE-sized raw file.

Generates a raw `yoochoose-clicks.dat` shaped like the real one (33M clicks, 9M sessions, 53k
items, six months, Zipf item popularity) with vectorized numpy, then builds it through the real
TFDS builder in a child process and reports the child's wall time and peak RSS.
Target on the 2-core dev machine: < 15 min and < 8 GiB.

  python benchmarks/preprocess_speed.py                    # full size
  python benchmarks/preprocess_speed.py --clicks=1000000   # quicker, same shape
  python benchmarks/preprocess_speed.py --cache_dir=/tmp/yc_bench  # reuse the raw file
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
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


def build(manual_dir: str, data_dir: str, config: str) -> tuple[float, float]:
    """Builds in a child process; returns (wall seconds, child peak RSS in GiB)."""
    code = ("from narm_tf import data; "
            f"data.build_dataset('yoochoose', {manual_dir!r}, {data_dir!r}, {config!r})")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    wall = time.time() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kib / 2 ** 20


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
        wall, peak = build(manual_dir, os.path.join(tmp, "tfds"), FLAGS.config)
    print(f"build {FLAGS.config} from {FLAGS.clicks:,} clicks: wall {wall:.0f} s "
          f"({wall / 60:.1f} min), peak RSS {peak:.2f} GiB (targets: < 15 min, < 8 GiB)")


if __name__ == "__main__":
    app.run(main)
