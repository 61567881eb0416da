"""DIGINETICA (CIKM Cup 2016) session-prefix dataset: `tfds build tfds_builders/diginetica`."""
