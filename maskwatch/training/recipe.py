"""The training recipe of the mask classifier: one frozen dataclass whose defaults are the shipped recipe.

``Recipe()`` is the recipe that trained ``maskwatch/assets/mask_classifier.onnx``; ``maskwatch/assets/
train_config.yaml`` writes the same settings down for the command line, and a test keeps the two equal. Settings
of a run that do not change the model (output file, threads, report) are not part of it.

Experiments measured and rejected have no setting here; docs/experiments/training-flags.md records them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EFFICIENTNET_ARCHS = ("efficientnet_lite0", "efficientnet_lite1")
ARCHS = ("ofm", *EFFICIENTNET_ARCHS)
SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "assets" / "train_config.yaml"

# Per-architecture input size and optimiser settings; the efficientnet ones are the shipped recipe's.
# ofm trains from scratch; fine-tuning a pretrained backbone wants a lower rate and shorter epochs
# (CPU: ~1 s per step of 48 at 96 px).
ARCH_SETTINGS: dict[str, dict[str, Any]] = {
    "ofm": {"input_px": 64, "lr": 3e-3, "batch": 64, "weight_decay": 1e-4, "epoch_samples": 12000},
    **{
        a: {"input_px": 96, "lr": 6e-4, "batch": 48, "weight_decay": 1e-5, "epoch_samples": 4800}
        for a in EFFICIENTNET_ARCHS
    },
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the mask classifier is trained. The defaults are the shipped recipe.

    Attributes:
        arch: One of :data:`ARCHS`.
        input_px: Crop side S of the model input.
        crop_margin: Crop side over face side, as :func:`pipeline.headbox.crop_box` uses it.
        epochs: Training epochs, each drawing ``epoch_samples`` class-balanced crops.
        seed: Seeds the split, the sampling, the augmentation and the initialisation.
        in_domain_share: Share of each label's draws taken from the training images of ``val_sets``, the street
            photos closest to CCTV (0: in proportion to the counts, see
            :func:`maskwatch.training.augment.balanced_weights`).
        val_sets: Detection sets split by source image into training and held-out images (each on its own).
        use_wider: Add the ``wider_crowds`` detection set to training.
        lr, batch, weight_decay, epoch_samples: AdamW rate (warm-up + cosine), batch size, weight decay, and the
            crops drawn per epoch.
    """

    arch: str = "efficientnet_lite0"
    input_px: int = 96
    crop_margin: float = 1.6
    epochs: int = 10
    seed: int = 0
    in_domain_share: float = 0.5
    val_sets: tuple[str, ...] = ("andrewmvd_dev", "jolignier_dev")
    use_wider: bool = True
    lr: float = 6e-4
    batch: int = 48
    weight_decay: float = 1e-5
    epoch_samples: int = 4800

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            msg = f"unknown arch {self.arch!r}; choose one of {ARCHS}"
            raise ValueError(msg)
        if not 0.0 <= self.in_domain_share < 1.0:
            msg = f"in_domain_share must be in [0, 1), got {self.in_domain_share}"
            raise ValueError(msg)
        if isinstance(self.val_sets, str) or not self.val_sets:
            msg = f"val_sets must be a non-empty tuple of set names, got {self.val_sets!r}"
            raise ValueError(msg)
        if self.epochs < 1 or self.batch < 1 or self.epoch_samples < self.batch:
            msg = (
                "epochs and batch must be >= 1 and epoch_samples >= batch, got "
                f"{self.epochs}, {self.batch}, {self.epoch_samples}"
            )
            raise ValueError(msg)

    @property
    def steps_per_epoch(self) -> int:
        return self.epoch_samples // self.batch

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Recipe:
        """The recipe with ``settings`` (field name -> value) changed.

        A changed ``arch`` brings its own :data:`ARCH_SETTINGS` (input size, optimiser settings) unless
        ``settings`` names them too. ``val_sets`` may be a comma-separated string.

        Raises:
            ValueError: An unknown key or a value out of range.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            msg = f"unknown recipe setting(s) {unknown}; expected some of {sorted(names)}"
            raise ValueError(msg)
        changes = {k: _coerce(k, v, getattr(cls, k)) for k, v in settings.items()}
        arch = changes.get("arch", cls.arch)
        return cls(**{**ARCH_SETTINGS[arch], **changes} if arch in ARCH_SETTINGS else changes)

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-friendly values (``val_sets`` as a list)."""
        d = dataclasses.asdict(self)
        d["val_sets"] = list(self.val_sets)
        return d


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the field's ``default`` (values from a config file skip argparse's type checks)."""
    try:
        if isinstance(default, tuple):
            parts = value.split(",") if isinstance(value, str) else value
            return tuple(str(p).strip() for p in parts if str(p).strip())
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(value)
            return value
        if isinstance(default, (int, float)) and not isinstance(value, bool):
            cast = type(default)(value)
            if isinstance(default, int) and cast != float(value):
                raise TypeError(value)
            return cast
        if isinstance(default, str) and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    msg = f"recipe setting {name}: expected {type(default).__name__}, got {value!r}"
    raise ValueError(msg)


RECIPE_KEYS = frozenset(f.name for f in dataclasses.fields(Recipe))


def read_config(path: Path) -> dict[str, Any]:
    """The mapping of a YAML config file such as ``train_config.yaml`` (recipe fields and run options)."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(cfg, dict):
        msg = f"{path}: expected a mapping of settings, got {type(cfg).__name__}"
        raise ValueError(msg)
    return cfg


def shipped_recipe() -> Recipe:
    """The recipe written in ``maskwatch/assets/train_config.yaml`` (its run options, e.g. ``out``, left out)."""
    cfg = read_config(SHIPPED_CONFIG)
    return Recipe.from_settings({k: v for k, v in cfg.items() if k in RECIPE_KEYS})
