"""Checkpoints: one safetensors file of tensors plus a JSON manifest, written atomically.

Never pickles: tensors go through safetensors, everything else through JSON. The manifest
carries a SHA-256 of the tensor file and one of itself (``manifest_sha256``, over its
canonical JSON without that key), so truncation, corruption or a hand-edited manifest is
refused on load in one line naming the file. After each replace the directory is fsynced,
so the switch survives a power cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError


def save_file(tensors, path) -> None:
    """safetensors' writer, imported on first use: verifying a checkpoint needs no torch."""
    from safetensors.torch import save_file as write

    write(tensors, path)


def load_file(path):
    from safetensors.torch import load_file as read

    return read(path)

FORMAT = 1
FALLBACK_ORDER = ("last", "previous", "best")  # newest first: what --fallback walks through
REQUIRED = {"epoch": int, "batch": int, "global_step": int, "config": dict, "optimizer": dict, "rng": dict}
__all__ = ["save_checkpoint", "load_checkpoint", "flatten_optimizer", "unflatten_optimizer",
           "capture_rng", "restore_rng", "checkpoint_paths", "seal_manifest", "verify_checkpoint", "verify_last",
           "FALLBACK_ORDER"]


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its own checksum set (after a deliberate edit, e.g. in a test)."""
    return dict(manifest, manifest_sha256=_manifest_digest(manifest))


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX: the directory entry lives in the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def checkpoint_paths(path: str | Path) -> Path:
    """The manifest path of a checkpoint given as its manifest, its stem or a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any], *,
                    keep_previous: bool = False) -> Path:
    """Write ``<stem>-<hash>.safetensors``, then switch ``<stem>.json`` to it, then drop the old file.

    Replacing the manifest is the single commit point: until it happens the previous
    checkpoint is complete and loadable, whatever interrupts the write (signal, full disk).
    With ``keep_previous`` the replaced checkpoint stays loadable as ``previous.json``, the
    fallback when the newest one turns out corrupt.
    """
    manifest_path = checkpoint_paths(path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    staged = manifest_path.with_name(manifest_path.stem + ".staged.safetensors")
    old_file = _referenced_file(manifest_path)
    previous = manifest_path.with_name("previous.json")
    try:
        _atomic_write(staged, lambda p: save_file(tensors, str(p)))
        digest = _sha256(staged)
        tensor_path = manifest_path.with_name(f"{manifest_path.stem}-{digest[:12]}.safetensors")
        os.replace(staged, tensor_path)
        _fsync_dir(tensor_path.parent)
        manifest = seal_manifest(dict(manifest, format=FORMAT, tensors_file=tensor_path.name, sha256=digest))
        text = json.dumps(manifest, indent=1, sort_keys=True)
        if keep_previous and old_file is not None and old_file != tensor_path:
            stale = _referenced_file(previous)
            old_text = manifest_path.read_text()
            _atomic_write(previous, lambda p: p.write_text(old_text))
            if stale is not None and stale not in (old_file, tensor_path):
                stale.unlink(missing_ok=True)
            old_file = None  # now referenced by previous.json
        _atomic_write(manifest_path, lambda p: p.write_text(text))
    except Exception as exc:  # OSError, and safetensors' SafetensorError wrapping one (a full disk)
        staged.unlink(missing_ok=True)
        if not isinstance(exc, OSError) and "safetensor" not in type(exc).__name__.lower():
            raise
        raise CheckpointError(
            f"could not write checkpoint {manifest_path}: {_why(exc)}; the previous checkpoint "
            f"was kept, free disk space and resume"
        ) from None
    if old_file is not None and old_file != tensor_path:
        old_file.unlink(missing_ok=True)
    return manifest_path


def _why(exc: Exception) -> str:
    """The OS reason of a failed write, also when safetensors wrapped it in its own error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    for code in (28, 13, 30, 122):  # ENOSPC, EACCES, EROFS, EDQUOT as Rust's io::Error prints them
        name = os.strerror(code)
        if name.lower() in text.lower() or f"os error {code}" in text:
            return name
    return text.splitlines()[0] if text else type(exc).__name__


def _referenced_file(manifest_path: Path) -> Path | None:
    try:
        return manifest_path.with_name(json.loads(manifest_path.read_text())["tensors_file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(manifest, tensors), verifying the checksums; problems become one-line errors."""
    manifest, tensor_path = verify_checkpoint(path)
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"checkpoint {tensor_path} could not be read: {exc}") from None
    return manifest, tensors


def verify_last(folder: Path) -> None:
    """The refusal ``--resume`` without ``--fallback`` gives for a missing or bad ``last``,
    checked without torch (the command line calls it before loading anything heavy)."""
    last = folder / "last.json"
    others = [folder / f"{t}.json" for t in FALLBACK_ORDER[1:] if (folder / f"{t}.json").exists()]
    try:
        if not last.exists():
            raise CheckpointError(f"checkpoint {last} is missing")
        verify_checkpoint(last)
    except CheckpointError as exc:
        if not others:
            raise
        raise CheckpointError(f"{exc}; or pass --fallback to resume from {others[0]}") from None


def verify_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(manifest, tensor file) after checking both checksums; needs no torch."""
    manifest_path = checkpoint_paths(path)
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {manifest_path} not found; pass a run directory or a checkpoint .json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint manifest {manifest_path} is corrupt (not JSON); use another checkpoint") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "tensors_file" not in manifest:
        raise CheckpointError(f"{manifest_path} is not an advcore format-{FORMAT} checkpoint manifest")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise CheckpointError(f"checkpoint manifest {manifest_path} was edited or damaged (its checksum does not "
                              f"match); use another checkpoint")
    bad = [k for k, kind in REQUIRED.items() if k in manifest and not isinstance(manifest[k], kind)]
    if bad:
        raise CheckpointError(f"checkpoint manifest {manifest_path} has a malformed {bad[0]}; use another checkpoint")
    if not isinstance(manifest["tensors_file"], str) or "/" in manifest["tensors_file"]:
        raise CheckpointError(f"checkpoint manifest {manifest_path} names no tensor file of its own; use another checkpoint")
    tensor_path = manifest_path.with_name(manifest["tensors_file"])
    if not tensor_path.is_file():
        raise CheckpointError(f"checkpoint {manifest_path} names {tensor_path.name}, which is missing; use another checkpoint")
    if _sha256(tensor_path) != manifest.get("sha256"):
        raise CheckpointError(
            f"checkpoint {tensor_path} is corrupt or truncated (checksum mismatch); use another checkpoint"
        )
    return manifest, tensor_path


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into safetensors-able tensors and JSON."""
    import torch

    tensors, scalars = {}, {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG stream the run uses: torch (CPU and CUDA), numpy, Python."""
    import torch

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import torch

    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in meta:
        n = meta["numpy"]
        np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    if "python" in meta:
        p = meta["python"]
        random.setstate((p[0], tuple(p[1]), p[2]))
