"""Any shop's click log as session prefixes: `tfds build tfds_builders/click_log --config=...`."""
