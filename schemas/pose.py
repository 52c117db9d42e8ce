"""Per-frame poses and tracks of one camera, as a dataclass and as an Arrow record batch.

Stages exchange :data:`POSE_SCHEMA` record batches (one row per person). Coordinates are pixels of the original
frame; keypoints are COCO-17 ``(x_px, y_px, conf)`` (see :mod:`schemas.coco17`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from schemas.coco17 import NUM_KEYPOINTS

NO_TRACK = -1  # numpy sentinel for "not tracked"; Arrow uses null.

KEYPOINTS_TYPE = pa.fixed_shape_tensor(pa.float32(), [NUM_KEYPOINTS, 3], dim_names=["keypoint", "xyc"])
POSE_SCHEMA = pa.schema(
    [
        pa.field("camera_id", pa.string(), nullable=False),
        pa.field("frame_idx", pa.int64(), nullable=False),
        pa.field("pts_ns", pa.int64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("bbox_xyxy", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("keypoints", KEYPOINTS_TYPE, nullable=False),
        pa.field("track_id", pa.int64()),  # null = untracked
    ],
    metadata={"schema_version": "1", "coords": "px_original_frame", "keypoints": "coco17"},
)


@dataclass(frozen=True, slots=True)
class Poses:
    """People found in one frame of one camera.

    Attributes:
        camera_id: Camera the frame came from.
        frame_idx: 0-based index of the frame in the camera's stream (gaps = frames not processed).
        pts_ns: Presentation time of the frame in the stream, nanoseconds.
        score: `(N,)` float32 person confidence (0-1).
        bbox_xyxy: `(N, 4)` float32 person boxes, pixels of the original frame.
        keypoints: `(N, 17, 3)` float32 `(x_px, y_px, conf)`, COCO-17 order, original-frame pixels; a missing
            keypoint has conf 0.
        track_id: `(N,)` int64, :data:`NO_TRACK` where untracked.
    """

    camera_id: str
    frame_idx: int
    pts_ns: int
    score: npt.NDArray[np.float32]
    bbox_xyxy: npt.NDArray[np.float32]
    keypoints: npt.NDArray[np.float32]
    track_id: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        n = len(self.score)
        for name, arr, shape in (
            ("score", self.score, (n,)),
            ("bbox_xyxy", self.bbox_xyxy, (n, 4)),
            ("keypoints", self.keypoints, (n, NUM_KEYPOINTS, 3)),
            ("track_id", self.track_id, (n,)),
        ):
            if arr.shape != shape:
                msg = f"Poses.{name} must have shape {shape}, got {arr.shape}"
                raise ValueError(msg)
        if np.isnan(self.keypoints).any():
            msg = "Poses.keypoints must not contain NaN (a missing keypoint has conf 0)"
            raise ValueError(msg)

    @classmethod
    def empty(cls, camera_id: str, frame_idx: int, pts_ns: int) -> Poses:
        """No person in this frame."""
        return cls(
            camera_id,
            frame_idx,
            pts_ns,
            np.zeros(0, np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros((0, NUM_KEYPOINTS, 3), np.float32),
            np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.score)

    def with_track_ids(self, track_id: npt.NDArray[np.int64]) -> Poses:
        """A copy with ``track_id`` (`(N,)` int64) set."""
        return Poses(
            self.camera_id, self.frame_idx, self.pts_ns, self.score, self.bbox_xyxy, self.keypoints, track_id
        )

    def to_arrow(self) -> pa.RecordBatch:
        """Encode as a :data:`POSE_SCHEMA` record batch (one row per person)."""
        n = len(self)
        flat = pa.array(self.keypoints.reshape(-1).astype(np.float32), pa.float32())
        keypoints = KEYPOINTS_TYPE.wrap_array(pa.FixedSizeListArray.from_arrays(flat, NUM_KEYPOINTS * 3))
        boxes = pa.FixedSizeListArray.from_arrays(pa.array(self.bbox_xyxy.reshape(-1), pa.float32()), 4)
        track = pa.array(self.track_id, pa.int64(), mask=self.track_id == NO_TRACK)
        return pa.RecordBatch.from_arrays(
            [
                pa.array([self.camera_id] * n, pa.string()),
                pa.array(np.full(n, self.frame_idx, np.int64)),
                pa.array(np.full(n, self.pts_ns, np.int64)),
                pa.array(self.score.astype(np.float32), pa.float32()),
                boxes,
                keypoints,
                track,
            ],
            schema=POSE_SCHEMA,
        )

    @classmethod
    def from_arrow(cls, batch: pa.RecordBatch, camera_id: str, frame_idx: int, pts_ns: int) -> Poses:
        """Decode a :data:`POSE_SCHEMA` record batch of one frame.

        ``camera_id``, ``frame_idx`` and ``pts_ns`` are passed explicitly because a batch of zero rows carries none.

        Raises:
            ValueError: If the batch's schema differs from :data:`POSE_SCHEMA` or a row belongs to another frame.
        """
        if not batch.schema.equals(POSE_SCHEMA):
            msg = f"record batch schema must be POSE_SCHEMA, got {batch.schema}"
            raise ValueError(msg)
        n = batch.num_rows
        if n and (
            set(batch.column("camera_id").to_pylist()) != {camera_id}
            or set(batch.column("frame_idx").to_pylist()) != {frame_idx}
        ):
            msg = f"record batch holds rows of another frame than {camera_id!r} #{frame_idx}"
            raise ValueError(msg)
        boxes = batch.column("bbox_xyxy").flatten().to_numpy(zero_copy_only=False).reshape(n, 4)
        kp_col = batch.column("keypoints").storage.flatten().to_numpy(zero_copy_only=False)
        track = batch.column("track_id").fill_null(NO_TRACK).to_numpy(zero_copy_only=False)
        return cls(
            camera_id,
            frame_idx,
            pts_ns,
            batch.column("score").to_numpy(zero_copy_only=False).astype(np.float32),
            boxes.astype(np.float32),
            kp_col.reshape(n, NUM_KEYPOINTS, 3).astype(np.float32),
            track.astype(np.int64),
        )
