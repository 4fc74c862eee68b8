"""`tidal.client`: the raw layout helpers and the small client, against the real server."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import TidalServer, reference
from tidal.client import Client, build_request, from_raw, kserve_datatype, to_raw

LAYOUTS = [
    (np.array([[True, False], [False, True]]), "BOOL", b"\x01\x00\x00\x01"),
    (np.array([1, -2], dtype=np.int16), "INT16", b"\x01\x00\xfe\xff"),
    (np.array([1, -2], dtype=">i4"), "INT32", b"\x01\x00\x00\x00\xfe\xff\xff\xff"),
    (np.array([2**64 - 1], dtype=np.uint64), "UINT64", b"\xff" * 8),
    (np.array([1.0], dtype=">f2"), "FP16", b"\x00\x3c"),
    (np.array([1.0], dtype=np.float32), "FP32", b"\x00\x00\x80\x3f"),
    (np.array([-2.0], dtype=">f8"), "FP64", b"\x00" * 7 + b"\xc0"),
    (np.array([b"ab", b""], dtype=np.object_), "BYTES", b"\x02\x00\x00\x00ab\x00\x00\x00\x00"),
    (np.array(["é"]), "BYTES", b"\x02\x00\x00\x00\xc3\xa9"),
]


@pytest.mark.parametrize(
    ("array", "datatype", "raw"), LAYOUTS, ids=[str(x[0].dtype) for x in LAYOUTS]
)
def test_raw_layout(array: np.ndarray, datatype: str, raw: bytes) -> None:
    """Little-endian, row-major, BYTES length-prefixed, whatever the array's byte order."""
    assert kserve_datatype(array) == datatype
    assert to_raw(array) == raw
    back = from_raw(raw, datatype, array.shape)
    assert back.shape == array.shape
    if datatype == "BYTES":
        assert back.tolist() == [x.encode() if isinstance(x, str) else x for x in array.ravel()]
    else:
        np.testing.assert_array_equal(back, array)


def test_unsupported_dtype() -> None:
    with pytest.raises(ValueError, match="complex64"):
        kserve_datatype(np.zeros(2, np.complex64))


def test_build_request_sets_the_parameters() -> None:
    a = np.ones((1, 16), np.float32)
    request = build_request(
        "add_sub", {"a": a, "b": a}, outputs=["sum"], request_id="r", priority=2, timeout_us=9
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("a", "FP32", [1, 16]),
        ("b", "FP32", [1, 16]),
    ]
    assert len(request.raw_input_contents) == 2
    assert [o.name for o in request.outputs] == ["sum"]
    assert request.parameters["priority"].uint64_param == 2
    assert request.parameters["timeout"].int64_param == 9
    assert request.id == "r"


def test_client_against_the_server(server: TidalServer, repo: Path) -> None:
    rng = np.random.default_rng(40)
    with Client(server.grpc) as client:
        assert client.is_live() is True
        assert client.is_ready() is True
        metadata = client.model_metadata("mlp")
        assert [(t.name, list(t.shape)) for t in metadata.inputs] == [("x", [-1, 512])]
        # A big-endian array is sent in the protocol's little-endian layout.
        x = rng.standard_normal((2, 512)).astype(">f4")
        outputs = client.infer("mlp", {"x": x}, request_id="mine", priority=1, deadline_s=30)
        expected = reference(repo, "mlp", {"x": x.astype(np.float32)})["y"]
        np.testing.assert_allclose(outputs["y"], expected, rtol=1e-4, atol=1e-5)
        a, b = (rng.standard_normal((3, 16), dtype=np.float32) for _ in range(2))
        only_sum = client.infer("add_sub", {"a": a, "b": b}, outputs=["sum"], timeout_us=10**6)
        assert list(only_sum) == ["sum"]
        np.testing.assert_array_equal(only_sum["sum"], a + b)
        with pytest.raises(grpc.RpcError) as info:
            client.infer("add_sub", {"a": a})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "`b`" in info.value.details()
