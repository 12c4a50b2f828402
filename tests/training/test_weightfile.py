"""Weights files are recognised by the safetensors structure, whatever byte the header length starts
with; pickles, zip archives and damaged files are refused with one line and never unpickled."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_bytes

from highmodal.errors import HighmodalError
from highmodal.training.weightfile import check_weights, read_weights

TENSORS = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([1, -2], dtype=torch.int64),
           "h": torch.ones(5, dtype=torch.bfloat16)}


def padded(tensors: dict[str, torch.Tensor], length_mod: int | None = None, pad: int = 0, modulus: int = 256) -> bytes:
    """A safetensors file whose JSON header is padded with spaces (as the format allows): by ``pad``
    spaces, or to the smallest length ≡ ``length_mod`` (mod ``modulus``)."""
    raw = save_bytes(tensors)
    n = struct.unpack("<Q", raw[:8])[0]
    if length_mod is not None:
        pad = (length_mod - n) % modulus
    return struct.pack("<Q", n + pad) + raw[8:8 + n] + b" " * pad + raw[8 + n:]


def assert_loads(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    check_weights(path)
    got = read_weights(path)
    assert got.keys() == tensors.keys()
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def assert_refused(path: Path, *words: str) -> str:
    with pytest.raises(HighmodalError) as err:
        read_weights(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    for word in words:
        assert word in msg, msg
    return msg


@pytest.mark.parametrize("low", range(256))
def test_every_low_byte_of_the_header_length_loads(tmp_path, low):
    path = tmp_path / "m.safetensors"
    path.write_bytes(padded(TENSORS, low))
    assert path.read_bytes()[0] == low
    assert_loads(path, TENSORS)


def test_header_length_spelling_pk_loads(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(padded(TENSORS, 0x4B50, modulus=1 << 16))  # little-endian 0x4B50 is b"PK"
    assert path.read_bytes()[:2] == b"PK"
    assert_loads(path, TENSORS)


DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8,
          torch.bool]


@st.composite
def tensor_dicts(draw) -> dict[str, torch.Tensor]:
    names = draw(st.lists(st.text("abcdefgh._", min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
    out = {}
    for name in names:
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        dtype = draw(st.sampled_from(DTYPES))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        out[name] = (torch.randint(0, 2, shape, generator=gen) if dtype == torch.bool
                     else torch.randint(0, 100, shape, generator=gen)).to(dtype)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=tensor_dicts(), pad=st.integers(0, 70_000))
def test_any_valid_file_loads(tmp_path, tensors, pad):
    path = tmp_path / "m.safetensors"
    path.write_bytes(padded(tensors, pad=pad))
    assert_loads(path, tensors)


class Payload:
    """Unpickling this would run code: a file holding it must never be loaded."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled')",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickles_are_refused(tmp_path, protocol):
    path = tmp_path / "m.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0], "x": Payload()}, protocol=protocol))
    assert_refused(path, "a pickle", "refusing it")


def test_torch_save_both_formats_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    torch.save(TENSORS, path)
    assert_refused(path, "a zip archive", "refusing it")
    torch.save(TENSORS, path, _use_new_zipfile_serialization=False)
    assert_refused(path, "a pickle", "refusing it")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.dictionaries(st.text("abc", min_size=1, max_size=5), st.binary(max_size=200), min_size=0,
                               max_size=3))
def test_zip_archives_are_refused(tmp_path, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    path = tmp_path / "m.safetensors"
    path.write_bytes(buf.getvalue())
    assert_refused(path, "a zip archive", "refusing it")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(low=st.integers(0, 255), data=st.data())
def test_truncated_or_extended_files_are_refused(tmp_path, low, data):
    whole = padded(TENSORS, low)
    path = tmp_path / "m.safetensors"
    cut = data.draw(st.integers(0, len(whole) - 1))
    path.write_bytes(whole[:cut])
    assert_refused(path, "not a safetensors file")
    path.write_bytes(whole + data.draw(st.binary(min_size=1, max_size=16)))
    assert_refused(path, "not a safetensors file")


def test_other_damage_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    for content, reason in [(struct.pack("<Q", 2) + b"[]", "not a JSON object"),
                            (struct.pack("<Q", 2) + b"\xff\xfe", "not UTF-8 JSON"),
                            (struct.pack("<Q", 13) + b'{"w": {"a":1}}'[:13], "not UTF-8 JSON"),
                            (struct.pack("<Q", 14) + b'{"w": {"a":1}}', "no valid data_offsets")]:
        path.write_bytes(content)
        assert_refused(path, reason)
    path.unlink()
    assert_refused(path, "not found")
