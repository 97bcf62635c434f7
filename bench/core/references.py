"""Where a run's models and data come from, and the device they run on: checks shared by the run
config (fexbench.harness.config) and the loaders below it (fexbench.data, fexbench.models), kept
here so that those layers never import the harness."""
from __future__ import annotations

from pathlib import Path

from fexbench.core.errors import UsageError


class ConfigError(UsageError, ValueError):
    """A bad run config: the message names the file and the dotted key at fault."""


LOCAL_SUFFIXES = {".safetensors", ".json", ".bin", ".pt", ".pth", ".parquet", ".csv", ".arrow", ".toml",
                  ".txt", ".jsonl", ".npy", ".npz"}


def looks_local(value: str) -> bool:
    """Does a model/dataset reference name a local path rather than a hub name?

    Local: absolute, ./ ../ ~, an existing path, a file suffix (.safetensors ...), the local-dir:
    prefix, or a relative path whose first folder exists here ("datasets/wb_hf" when ./datasets
    exists). Hub names ("microsoft/resnet-50", "ViT-B-32", "resnet50.a1_in1k") are none of these.
    """
    if value.startswith("local-dir:"):
        return True
    if value.startswith(("hf-hub:", "hf_hub:")):
        return False
    path = Path(value).expanduser()
    if value.startswith(("/", "./", "../", "~")) or path.suffix.lower() in LOCAL_SUFFIXES or path.exists():
        return True
    return len(path.parts) > 1 and Path(path.parts[0]).is_dir()


def local_path(value: str) -> Path:
    return Path(value.removeprefix("local-dir:")).expanduser()


def is_device(device: str) -> bool:
    import torch
    try:
        return device == "auto" or torch.device(device).type in ("cpu", "cuda", "mps")
    except (RuntimeError, ValueError, TypeError):
        return False


def check_device(device: str) -> str:
    """The device to use: "auto" is cuda when available, else cpu; a cuda/mps device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device (cpu, cuda, cuda:N, mps or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here (torch {torch.__version__}, "
                              f"CUDA build: {torch.version.cuda or 'none'}); use device = \"cpu\" or \"auto\"")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r} requested but MPS is not available here")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (cpu, cuda, cuda:N, mps or auto)")
    return device
