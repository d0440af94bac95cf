"""The vqgen file, which every file kind builds on: safetensors tensors plus one JSON metadata blob, written
atomically; and the atomic writes of every other output (PNGs, logs, JSON).

A vqgen file is a plain safetensors file whose string metadata holds one key, ``vqgen``, with a
JSON object inside. That object always has ``kind`` (``vqvae``, ``prior``, ``codes``,
``samples``, ...) and ``format_version``. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqgen import distributed as dist
from vqgen.errors import VQGenError

FORMAT_VERSION = 1
METADATA_KEY = "vqgen"
KIND_NAMES = {
    "vqvae": "a VQ-VAE checkpoint",
    "prior": "a prior (PixelCNN, transformer or masked) checkpoint",
    "codes": "a code file",
    "samples": "a samples code file",
    "classifier": "a classifier checkpoint",
    "resume": "a resumable training state",
}
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, torch.save zip archive


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success.

    A crash at any moment (even SIGKILL) leaves either the old complete file or the new complete
    one. The temporary name is hidden and ends in ``.tmp`` (``.vqvae.safetensors.k3j9.tmp``), so
    a leftover from a killed process is never taken for a checkpoint or an input image.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    check_output_path(path, try_creating=False)  # the mkdir and mkstemp below are the real try
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise VQGenError(f"{path}: cannot write here ({e.strerror or e})") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise VQGenError(f"{path}: could not write ({e.strerror or e}); any previous file there is unchanged") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_path(path: str | Path, folder: bool = False, try_creating: bool = True) -> None:
    """Fail early, before any work, when ``path`` (a file, or with ``folder`` a folder) cannot be written.

    Leaves nothing behind: the nearest existing ancestor must be a writable folder, and ``path``
    itself, if it exists, must be of the right type. Permission bits do not tell everything (root
    passes them on /proc and on read-only mounts), so with ``try_creating`` a hidden folder is made
    in that ancestor and removed again; under torchrun only rank 0 tries (the others write nothing).
    Missing folders between the ancestor and ``path`` are created later, by the write itself.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise VQGenError(f"{path}: cannot write here ({'not a folder' if folder else 'a folder is in the way'})")
    ancestor = path if folder else (path.parent if str(path.parent) else Path("."))
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise VQGenError(f"{path}: cannot write here ({ancestor} is not a folder)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise VQGenError(f"{path}: cannot write here ({ancestor} is not writable)")
    if try_creating and dist.launch_rank() == 0:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".vqgen-check.", suffix=".tmp", dir=ancestor))
        except OSError as e:
            raise VQGenError(f"{path}: cannot write here (nothing can be created in {ancestor}: {e.strerror or e})") from e


@contextlib.contextmanager
def staged_folder(path: str | Path) -> Iterator[Path]:
    """Yield where to write an output folder's files: a new folder appears only complete (written under a hidden
    temporary name beside it, renamed on success, removed on failure); into an existing folder each file is
    written atomically, in place."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    parent = make_output_folder(path.parent if str(path.parent) else Path("."))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise VQGenError(f"{path}: cannot write here ({e.strerror or e})") from e
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes owner-only folders
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_output_folder(path: str | Path) -> Path:
    """``mkdir -p`` for an output folder, with a one-line error instead of an OSError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VQGenError(f"{path}: cannot create this folder ({e.strerror or e})") from e
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (matters on power loss, not on a killed process)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_vqgen_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors and JSON metadata (``meta`` must contain ``kind``) atomically."""
    assert "kind" in meta, "vqgen files always record their kind"
    meta = {**meta, "format_version": FORMAT_VERSION}
    header = {METADATA_KEY: json.dumps(meta)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read only the JSON metadata of a vqgen file (cheap: the header, not the tensors)."""
    path = existing_file(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise VQGenError(f"{path}: {not_safetensors_reason(path)}") from e
    if METADATA_KEY not in header:
        raise VQGenError(f"{path}: a safetensors file, but not one written by vqgen (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise VQGenError(f"{path}: vqgen metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise VQGenError(f"{path}: vqgen metadata without a 'kind'; the file is not one vqgen wrote")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise VQGenError(f"{path}: written by a newer vqgen (format {meta['format_version']}); upgrade vqgen")
    return meta


def load_vqgen_file(
    path: str | Path, kind: str | tuple[str, ...] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a vqgen file, checking that it is of the expected ``kind``."""
    meta = read_metadata(path)
    expect_kind(path, meta, kind)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VQGenError(f"{path}: the file is damaged ({e})") from e
    return tensors, meta


PRIOR_ARCH_NAMES = {"pixelcnn": "PixelCNN", "transformer": "transformer", "masked": "masked"}


def kind_name(meta: dict[str, Any], unknown: str = "a vqgen file") -> str:
    """What the file whose metadata is ``meta`` is, in words: "a VQ-VAE checkpoint", "a prior (transformer)
    checkpoint", ..."""
    kind = meta.get("kind")
    if kind == "prior":
        arch = (meta.get("config") or {}).get("arch", "pixelcnn")
        return f"a prior ({PRIOR_ARCH_NAMES.get(arch, arch)}) checkpoint"
    return KIND_NAMES.get(kind, unknown)


def expect_kind(path: str | Path, meta: dict[str, Any], kind: str | tuple[str, ...] | None) -> None:
    if kind is None:
        return
    kinds = (kind,) if isinstance(kind, str) else kind
    found = meta.get("kind")
    if found not in kinds:
        wanted = " or ".join(KIND_NAMES.get(k, k) for k in kinds)
        got = kind_name(meta, f"a file of kind '{found}'")
        raise VQGenError(f"{path}: this is {got}, but {wanted} is expected here")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VQGenError(f"{path}: no such file")
    if not path.is_file():
        raise VQGenError(f"{path}: not a file")
    return path


def not_safetensors_reason(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(PICKLE_MAGIC):
        return "looks like a pickle/torch.save file; vqgen never unpickles files (use vqgen safetensors checkpoints)"
    if not head:
        return "the file is empty"
    return "not a safetensors file (truncated or of another format)"
