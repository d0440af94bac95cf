import pickle

import pytest
import torch
from safetensors.torch import save_file

from vqgen.formats.files import load_vqgen_file, read_metadata, save_vqgen_file
from vqgen.errors import VQGenError


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    path = tmp_path / "x.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int16)}
    save_vqgen_file(path, tensors, {"kind": "codes", "num_codes": 5, "nested": {"k": [1, 2]}})
    loaded, meta = load_vqgen_file(path, "codes")
    assert meta["num_codes"] == 5 and meta["nested"] == {"k": [1, 2]} and meta["format_version"] == 1
    assert torch.equal(loaded["a"], tensors["a"]) and loaded["b"].dtype == torch.int16
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left behind


def test_wrong_kind_names_both_kinds(tmp_path):
    path = tmp_path / "p.safetensors"
    save_vqgen_file(path, {"w": torch.zeros(1)}, {"kind": "prior"})
    with pytest.raises(VQGenError, match=r"p.safetensors: this is a prior .* but a VQ-VAE checkpoint is expected"):
        load_vqgen_file(path, "vqvae")


def test_pickles_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(VQGenError, match="never unpickles"):
        read_metadata(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(VQGenError, match="never unpickles"):
        read_metadata(raw)


def test_foreign_safetensors_and_garbage_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(VQGenError, match="not one written by vqgen"):
        read_metadata(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello world, not a tensor file")
    with pytest.raises(VQGenError, match="garbage.safetensors: not a safetensors file"):
        read_metadata(garbage)
    with pytest.raises(VQGenError, match="no such file"):
        read_metadata(tmp_path / "missing.safetensors")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    save_vqgen_file(path, {"w": torch.ones(2)}, {"kind": "codes"})

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("vqgen.formats.files.save_file", crash_midway)
    with pytest.raises((OSError, VQGenError), match="disk full"):
        save_vqgen_file(path, {"w": torch.zeros(2)}, {"kind": "codes"})
    monkeypatch.undo()
    loaded, _ = load_vqgen_file(path, "codes")
    assert torch.equal(loaded["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_output_check_tries_creating_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import tempfile

    from vqgen.formats.files import check_output_path

    target = tmp_path / "new" / "sub" / "x.safetensors"
    check_output_path(target)  # missing parents under a writable folder are fine ...
    assert list(tmp_path.iterdir()) == []  # ... and the check itself leaves nothing behind
    save_vqgen_file(target, {"t": torch.zeros(1)}, {"kind": "codes"})  # the write creates them
    assert target.is_file()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    # a read-only mount passes the permission bits for root; trying to create something tells
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(VQGenError, match="cannot write here .*Read-only file system"):
        check_output_path(tmp_path / "y.safetensors")
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    check_output_path(tmp_path / "y.safetensors")  # under torchrun only rank 0 tries (the others write nothing)
