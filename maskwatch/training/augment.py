"""Training-time augmentation and class-balanced sampling of the mask classifier's crops (numpy / OpenCV)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from maskwatch.training.data import MASK_INCORRECT, WITH_MASK, WITHOUT_MASK

# Share of each source label in a class-balanced epoch: half mask, half no mask, and the rare
# mask_worn_incorrectly faces oversampled (they are the classifier's main error).
CLASS_SHARE = {WITH_MASK: 0.5, WITHOUT_MASK: 0.4, MASK_INCORRECT: 0.1}


class StreetAugment:
    """Make crops of big, sharp faces look like CCTV street faces (numpy/OpenCV, uint8 RGB in and out).

    Random horizontal flip, small rotation/scale/shift (keypoint head boxes sit a bit off-centre), downscale of
    the face to 12-40 px and back up (as the pipeline upscales small crops), Gaussian blur, colour jitter,
    occasional grey (IR night) and sensor noise, and JPEG re-encoding.
    """

    def __init__(self, input_px: int, crop_margin: float, rng: np.random.Generator) -> None:
        self.px = input_px
        self.margin = crop_margin
        self.rng = rng

    def __call__(self, img: npt.NDArray[np.uint8], face_px: float) -> npt.NDArray[np.uint8]:
        r, px = self.rng, self.px
        out = img
        if r.random() < 0.5:
            out = out[:, ::-1]
        if r.random() < 0.7:
            ang = r.uniform(-12, 12)
            scale = r.uniform(0.9, 1.12)
            m = cv2.getRotationMatrix2D((px / 2, px / 2), ang, scale)
            m[:, 2] += r.uniform(-0.07, 0.07, 2) * px
            out = cv2.warpAffine(
                np.ascontiguousarray(out), m, (px, px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            )
        # Effective face resolution in this crop: the source face height, capped by the crop resolution.
        effective = min(float(face_px), px / self.margin) if math.isfinite(face_px) else px / self.margin
        if r.random() < 0.6:
            target = r.uniform(12, 40)
            if target < effective:
                side = max(4, round(px * target / effective))
                small = cv2.resize(np.ascontiguousarray(out), (side, side), interpolation=cv2.INTER_AREA)
                out = cv2.resize(small, (px, px), interpolation=cv2.INTER_LINEAR)
        if r.random() < 0.25:
            out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), r.uniform(0.3, 1.2))
        if r.random() < 0.3:
            # Masks come in every colour: rotate the hue (skin moves too, but within a plausible range at p 0.3).
            hsv = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(r.integers(0, 180))) % 180
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        f = np.asarray(out, np.float32)
        if r.random() < 0.8:
            f = f * r.uniform(0.65, 1.35) + r.uniform(-25, 25)  # brightness / exposure
            mean = f.mean()
            f = (f - mean) * r.uniform(0.7, 1.3) + mean  # contrast
            grey = f.mean(axis=2, keepdims=True)
            f = (f - grey) * r.uniform(0.6, 1.4) + grey  # saturation
            f = f * r.uniform(0.92, 1.08, 3)  # white balance
        if r.random() < 0.05:
            f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
        if r.random() < 0.2:
            f = f + r.normal(0, r.uniform(2, 8), f.shape)
        out = np.clip(f, 0, 255).astype(np.uint8)
        if r.random() < 0.4:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(r.integers(25, 90))])
            if ok:
                out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        return np.ascontiguousarray(out)


def balanced_weights(
    label: npt.NDArray[np.int8],
    share: dict[int, float] = CLASS_SHARE,
    in_domain: npt.NDArray[np.bool_] | None = None,
    in_domain_share: float = 0.0,
) -> npt.NDArray[np.float64]:
    """Per-sample sampling weights giving each source label its ``share`` of an epoch.

    Args:
        label: `(N,)` int8 index into :data:`maskwatch.training.data.LABELS`.
        share: Share of an epoch per label (labels absent from ``label`` are dropped and the rest renormalised).
        in_domain: `(N,)` bool, the samples of the target domain (here the ``andrewmvd_dev`` street photos).
        in_domain_share: Within each label that has both in- and out-of-domain samples, the share of its draws that
            are in-domain (0: in proportion to the counts, the plain class balance).

    Returns:
        `(N,)` float64 probabilities summing to 1.
    """
    w = np.zeros(len(label), np.float64)
    present = {k: v for k, v in share.items() if np.any(label == k)}
    total = sum(present.values())
    for k, v in present.items():
        sel = label == k
        w[sel] = v / total / sel.sum()
        if in_domain is not None and in_domain_share > 0:
            inside, outside = sel & in_domain, sel & ~in_domain
            if inside.any() and outside.any():
                w[inside] = v / total * in_domain_share / inside.sum()
                w[outside] = v / total * (1.0 - in_domain_share) / outside.sum()
    return w
