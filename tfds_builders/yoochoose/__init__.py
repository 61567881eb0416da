"""YOOCHOOSE (RecSys Challenge 2015) session prefixes: `tfds build tfds_builders/yoochoose`."""
