"""``maskwatch dataset``: crops written for training are pixel-identical to the crops inference cuts."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maskwatch.cli_dataset import dataset
from maskwatch.dataset import EXTRACT_COLUMNS, MANIFEST, load_crop_dir, spread_best
from maskwatch.training.data import LABELS, VAL_SET, read_boxes_csv, split_images
from pipeline.headbox import crop_box, cut_crops
from pipeline.onnx_models import MaskClassifier
from schemas.messages import PersonDecision
from tests.conftest import SHARED_DATA, pose_model, shared_video

CLASSIFIER = Path(__file__).resolve().parents[1] / "maskwatch" / "assets" / "mask_classifier.onnx"
DEV = SHARED_DATA / "detection" / VAL_SET
IMAGES = ("images/maksssksksss0.jpg", "images/maksssksksss11.jpg", "images/maksssksksss13.jpg")


def _needs_dev() -> None:
    if not (DEV / "boxes.csv").is_file():
        pytest.skip(f"needs the shared detection set {DEV} (../shared/data is not beside this checkout)")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _tiny_set(tmp_path: Path) -> Path:
    """``tmp/myset/boxes.csv``: the real boxes of three andrewmvd_dev photos plus one face too small to keep."""
    set_dir = tmp_path / "myset"
    set_dir.mkdir()
    (set_dir / "images").symlink_to(DEV / "images")
    rows = [r for r in _rows(DEV / "boxes.csv") if r["image"] in IMAGES]
    rows.append({**rows[0], "label": "with_mask", "xmin": "1", "ymin": "1", "xmax": "6", "ymax": "6"})
    with (set_dir / "boxes.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return set_dir / "boxes.csv"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(boxes_csv, out_dir)`` after ``dataset import-boxes`` on the tiny set."""
    _needs_dev()
    tmp = tmp_path_factory.mktemp("import")
    boxes = _tiny_set(tmp)
    out = tmp / "crops"
    res = CliRunner().invoke(dataset, ["import-boxes", "--boxes", str(boxes), "--out", str(out),
                                       "--val-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert "with_mask: train" in res.output
    return boxes, out


def test_spread_best_takes_the_best_of_each_time_bin() -> None:
    times = [0, 1, 2, 3, 10, 11, 20, 21]
    quality = [0.1, 0.9, 0.2, 0.3, 0.5, 0.4, 0.1, 0.2]
    assert spread_best(times, quality, 3) == [1, 4, 7]
    assert spread_best(times, quality, 20) == list(range(8))
    # All in one bin: the best ones, whatever the time.
    assert spread_best([5, 5, 5], [0.5, 0.9, 0.1], 2) == [0, 1]


def test_import_boxes_writes_the_crops_inference_cuts(imported: tuple[Path, Path]) -> None:
    boxes_csv, out = imported
    clf = MaskClassifier(CLASSIFIER, "cpu")
    rows = _rows(out / MANIFEST)
    boxes = read_boxes_csv(boxes_csv)
    kept = [b for b in boxes if b.face_px >= 10]  # --min-face-px 10: the 5 px face (and any real tiny one) left out
    assert len(rows) == len(kept) < len(boxes)
    assert [r["source"] for r in rows] == [b.source for b in kept]
    _, val = split_images(boxes, val_fraction=0.5, seed=0)
    assert val  # both sides are exercised
    splits: dict[str, set[str]] = {}
    for r in rows:
        assert r["file"].startswith(f"{r['label']}/myset_")
        assert r["source"].startswith("myset/images/")
        image = cv2.imread(str(boxes_csv.parent / r["source"].removeprefix("myset/")), cv2.IMREAD_COLOR)
        face = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")]], np.float32)
        expected = cut_crops(image, crop_box(face, clf.crop_margin), clf.input_px)[0]
        assert np.array_equal(_rgb(out / r["file"]), expected), r["file"]
        assert float(r["face_px"]) == face[0, 3] - face[0, 1]
        assert r["split"] == ("val" if r["source"] in val else "train")
        splits.setdefault(r["source"], set()).add(r["split"])
    assert set(splits) == {f"myset/{i}" for i in IMAGES}
    assert all(len(s) == 1 for s in splits.values())  # one photo never on both sides
    assert Counter(r["label"] for r in rows)["mask_worn_incorrectly"] >= 1
    assert not (out / "unlabelled").exists()


def test_load_crop_dir_round_trip(imported: tuple[Path, Path]) -> None:
    _, out = imported
    rows = _rows(out / MANIFEST)
    cs = load_crop_dir(out, 96)
    assert len(cs) == len(rows)
    for i, r in enumerate(rows):
        assert np.array_equal(cs.crops[i], _rgb(out / r["file"]))
        assert LABELS[cs.label[i]] == r["label"]
        assert cs.source[i] == r["source"]
        assert cs.face_px[i] == np.float32(r["face_px"])
    val = load_crop_dir(out, 96, split="val")
    assert 0 < len(val) < len(cs)
    assert set(val.source) == {r["source"] for r in rows if r["split"] == "val"}
    small = load_crop_dir(out, 48)  # other sizes are resized (INTER_AREA down)
    assert small.crops.shape == (len(rows), 48, 48, 3)
    expected = cv2.resize(cs.crops[0], (48, 48), interpolation=cv2.INTER_AREA)
    assert np.array_equal(small.crops[0], expected)


def test_load_crop_dir_plain_folders(tmp_path: Path) -> None:
    (tmp_path / "with_mask").mkdir()
    (tmp_path / "unlabelled").mkdir()
    photo = np.zeros((40, 20, 3), np.uint8)
    photo[:, :, 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "with_mask" / "a.png"), photo)
    cv2.imwrite(str(tmp_path / "unlabelled" / "b.png"), photo)
    cs = load_crop_dir(tmp_path, 40)
    assert len(cs) == 1
    assert LABELS[cs.label[0]] == "with_mask"
    assert np.isnan(cs.face_px[0])
    assert cs.source[0] == f"{tmp_path.name}/with_mask/a.png"
    # The whole photo, padded to a square with grey: red in the middle, grey on the sides.
    assert tuple(cs.crops[0, 20, 20]) == (200, 0, 0)
    assert tuple(cs.crops[0, 20, 2]) == (114, 114, 114)
    (tmp_path / "masked").mkdir()
    with pytest.raises(ValueError, match="masked"):
        load_crop_dir(tmp_path, 40)


def test_load_crop_dir_reads_sorted_extract_crops(tmp_path: Path) -> None:
    """Crops of `dataset extract` that a person moved into label folders, deleted, or labelled in the manifest."""
    (tmp_path / "unlabelled").mkdir()
    for d in LABELS:
        (tmp_path / d).mkdir()
    rows = []
    for i in range(4):
        cv2.imwrite(str(tmp_path / "unlabelled" / f"c_t1_f{i}.png"), np.full((96, 96, 3), i, np.uint8))
        rows.append({c: "" for c in EXTRACT_COLUMNS} | {"file": f"unlabelled/c_t1_f{i}.png", "source": "v.mp4",
                                                          "face_px": str(20 + i)})
    rows[2]["label"] = "without_mask"  # labelled in the manifest, file left in unlabelled/
    with (tmp_path / MANIFEST).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(EXTRACT_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    shutil.move(tmp_path / "unlabelled" / "c_t1_f0.png", tmp_path / "with_mask")
    (tmp_path / "unlabelled" / "c_t1_f1.png").unlink()  # not a face: deleted
    cs = load_crop_dir(tmp_path, 96)  # c_t1_f3 is still unsorted: skipped
    assert [LABELS[v] for v in cs.label] == ["with_mask", "without_mask"]
    assert cs.face_px.tolist() == [20.0, 22.0]
    assert list(cs.source) == ["v.mp4", "v.mp4"]
    assert cs.crops[:, 0, 0, 0].tolist() == [0, 2]
    shutil.move(tmp_path / "unlabelled" / "c_t1_f2.png", tmp_path / "with_mask")
    with pytest.raises(ValueError, match=r"c_t1_f2\.png is labelled 'without_mask' but lies in with_mask"):
        load_crop_dir(tmp_path, 96)


@pytest.mark.slow
def test_extract_writes_the_crops_the_pipeline_classifies(tmp_path: Path) -> None:
    video = shared_video("street_5_masked.mp4")
    pose_model()
    out = tmp_path / "out"
    args = ["extract", "--source", str(video), "--out", str(out), "--target-fps", "5", "--per-track", "2"]
    res = CliRunner().invoke(dataset, args)
    assert res.exit_code == 0, res.output
    assert "street_5_masked:" in res.output
    assert "crops written" in res.output
    rows = _rows(out / MANIFEST)
    assert rows
    assert all(r["label"] == "" for r in rows)
    assert {r["file"] for r in rows} == {f"unlabelled/{p.name}" for p in (out / "unlabelled").iterdir()}
    per_track = Counter(r["track_id"] for r in rows)
    assert max(per_track.values()) <= 2
    assert len(per_track) >= 3
    assert all(r["file"] == f"unlabelled/street_5_masked_t{r['track_id']}_f{r['frame_idx']}.png" for r in rows)
    assert all((out / d).is_dir() and not any((out / d).iterdir()) for d in LABELS)
    clf = MaskClassifier(CLASSIFIER, "cpu")
    wanted = {int(r["frame_idx"]): [] for r in rows}
    for r in rows:
        wanted[int(r["frame_idx"])].append(r)
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    idx = -1
    while wanted:
        ok, frame = cap.read()
        assert ok, f"frames {sorted(wanted)} not found in {video}"
        idx += 1
        for r in wanted.pop(idx, []):
            head = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")]], np.float32)
            box = np.array([[float(r[f"crop_{k}"]) for k in ("x1", "y1", "x2", "y2")]], np.float32)
            assert np.allclose(box, crop_box(head, clf.crop_margin), atol=1e-3)
            expected = cut_crops(frame, box, clf.input_px)
            saved = _rgb(out / r["file"])
            assert np.array_equal(saved, expected[0]), r["file"]
            assert abs(float(clf.predict(saved[None])[0]) - float(r["mask_score"])) < 1e-3
            assert float(r["face_px"]) >= 16.0  # the pipeline's face rules applied
    cap.release()
    assert len(load_crop_dir(out, 96)) == 0  # nothing sorted yet
    # The decisions `maskwatch run` gives these people, to look at beside their crops: one per person, each
    # naming a track whose crops were written (street_5_masked: every person masked).
    decided = [PersonDecision.decode(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert decided
    assert {d.camera_id for d in decided} == {"street_5_masked"}
    assert len({d.track_id for d in decided}) == len(decided)
    assert {str(d.track_id) for d in decided if d.decision != "undecided"} <= set(per_track)
    assert [d.decision for d in decided].count("no_mask") == 0
    res = CliRunner().invoke(dataset, args)  # unlabelled/ is not empty
    assert res.exit_code == 2
    assert "--force" in res.output
    res = CliRunner().invoke(dataset, [*args, "--force"])  # again: the video's decisions are replaced, not doubled
    assert res.exit_code == 0, res.output
    assert len((out / "decisions.jsonl").read_text().splitlines()) == len(decided)


def test_bad_inputs_name_the_culprit(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    res = CliRunner().invoke(dataset, ["extract", "--source", str(missing), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.startswith("maskwatch: error:")
    assert str(missing) in res.output
    (tmp_path / "set").mkdir()
    boxes = tmp_path / "set" / "boxes.csv"
    boxes.write_text("image,label,xmin,ymin,xmax,ymax,img_w,img_h\na.jpg,masked,1,1,20,20,50,50\n")
    res = CliRunner().invoke(dataset, ["import-boxes", "--boxes", str(boxes), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.startswith("maskwatch: error:")
    assert str(boxes) in res.output
    assert "'masked'" in res.output
