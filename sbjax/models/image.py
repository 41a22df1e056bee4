"""Image CNNs with BatchNorm for MNIST-CIFAR (work in progress)."""

from __future__ import annotations

IMAGE_MODELS: tuple[str, ...] = ()


def build_image_model(cfg):
    raise ValueError(f"name={cfg.name!r} is invalid: image models are not implemented yet")
