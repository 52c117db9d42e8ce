"""maskwatch: face-mask usage statistics from CCTV (pose keypoints, head crops, a small mask classifier)."""

__version__ = "0.1.0"
