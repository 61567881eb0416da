"""YOOCHOOSE (RecSys Challenge 2015) session-prefix dataset: `tfds build tfds_builders/yoochoose`."""
