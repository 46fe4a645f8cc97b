"""The restricted unpickler: reads what the reference formats need, runs nothing else."""

from __future__ import annotations

import builtins
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from lore_datasets.errors import DataError
from lore_datasets.safe_pickle import UnsafePickleError, load_untrusted


def _sample() -> dict:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "bf16": base.to(torch.bfloat16),
        "view": base[1:, 1:3],  # offset + non-contiguous strides
        "transposed": base.T,
        "ints": torch.tensor([1, -2, 3], dtype=torch.int64),
        "empty": torch.zeros(0, 5),
        "nested": [{"a": (1, 2.5, "x", None, True)}, {"b": {1, 2}}],
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar": np.float64(1.5),
        "objects": np.array(["s", None], dtype=object),
        "ordered": OrderedDict(k=1),
    }


def _check(loaded: dict) -> None:
    expected = _sample()
    for key in ("bf16", "view", "transposed", "ints", "empty"):
        assert loaded[key].dtype == expected[key].dtype
        assert torch.equal(loaded[key], expected[key]), key
    assert loaded["nested"] == expected["nested"]
    np.testing.assert_array_equal(loaded["array"], expected["array"])
    assert loaded["scalar"] == 1.5
    assert loaded["objects"].tolist() == ["s", None]
    assert loaded["ordered"] == {"k": 1}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_of_tensors_and_arrays(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(_sample(), protocol=protocol))
    _check(load_untrusted(path))


@pytest.mark.parametrize("zipped", [True, False])
def test_torch_save_formats(tmp_path: Path, zipped: bool) -> None:
    path = tmp_path / "x.pt"
    torch.save([_sample()], path, _use_new_zipfile_serialization=zipped)
    _check(load_untrusted(path)[0])


class _Shell:
    """Pickles to os.system(<touch marker>)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_Shell, _Eval])
@pytest.mark.parametrize("writer", ["pickle", "torch_zip", "torch_legacy"])
def test_malicious_file_runs_nothing(tmp_path: Path, payload, writer: str) -> None:
    marker = tmp_path / "marker"
    # The payload sits deep inside otherwise valid data.
    obj = {"ok": torch.ones(2), "rows": [{"extra_info": {"user_id": payload(marker)}}]}
    path = tmp_path / "evil.pkl"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=writer == "torch_zip")
    with pytest.raises(UnsafePickleError) as info:
        load_untrusted(path)
    message = str(info.value)
    assert str(path) in message
    assert ("system" in message) or ("eval" in message)
    assert "nothing from the file was executed" in message
    assert not marker.exists()


def test_tensor_record_past_its_storage_is_refused(tmp_path: Path) -> None:
    class Overreach:
        def __reduce__(self):
            storage = torch.ones(3).untyped_storage()
            typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32,
                                               _internal=True)
            return (torch._utils._rebuild_tensor_v2, (typed, 0, (100,), (1,), False, OrderedDict()))

    path = tmp_path / "over.pkl"
    path.write_bytes(pickle.dumps(Overreach()))
    with pytest.raises(DataError, match="reaches past its storage"):
        load_untrusted(path)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(_sample())[:-40])
    with pytest.raises(DataError, match=r"cut.pkl: not a readable pickle"):
        load_untrusted(path)
    with pytest.raises(DataError, match=r"nope.pkl: file not found"):
        load_untrusted(tmp_path / "nope.pkl")
    zipped = tmp_path / "bad.pt"
    torch.save({"a": torch.ones(3)}, zipped)
    zipped.write_bytes(zipped.read_bytes()[:200])
    with pytest.raises(DataError, match=r"bad\.pt"):
        load_untrusted(zipped)
