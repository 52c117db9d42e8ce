"""Thin Ray actors around the pure ``pipeline`` functions: camera shards, pose and classify pools, the sink."""
