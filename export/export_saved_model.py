"""`python -m export.export_saved_model`: the `narm-export` command (`narm_tf/export.py`, where
its flags and signatures are documented), run from a clone."""

from narm_tf import cli  # noqa: F401  (first: it quiets TensorFlow's logs)
from narm_tf.export import define_flags, main, run  # noqa: F401  (the command's parts)

if __name__ == "__main__":
    run()
