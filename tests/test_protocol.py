"""tidal's protocol files against tritonclient's, and the standard gRPC services.

- Every message, field and enum value of tidal's `.proto` files has the number
  and type of the same-named one in tritonclient's generated modules, so the
  two are wire-compatible.
- The committed Python stubs are what `tidal._protogen` generates today.
- `grpc.health.v1.Health` and server reflection answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.model_config_pb2 as triton_config
import tritonclient.grpc.service_pb2 as triton_service
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from helpers import TidalServer
from tidal import _protogen
from tidal._proto import grpc_service_pb2, model_config_pb2

PROTO_DIR = Path(_protogen.__file__).resolve().parents[2] / "proto"
PAIRS = [
    (grpc_service_pb2.DESCRIPTOR, triton_service),
    (model_config_pb2.DESCRIPTOR, triton_config),
]


def _messages(descriptor: Descriptor | FileDescriptor) -> Iterator[Descriptor]:
    """Every message type in a file or message, nested ones included."""
    children = (
        descriptor.message_types_by_name.values()
        if isinstance(descriptor, FileDescriptor)
        else descriptor.nested_types
    )
    for message in children:
        yield message
        yield from _messages(message)


def _enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    for message in _messages(file):
        yield from message.enum_types


def _type_name(field: FieldDescriptor) -> str | None:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return None


EXTENSION_FIELD_NUMBERS = 1000
"""tidal's own fields are numbered from here on: Triton's clients skip them as unknown."""


def _triton_message(module: object, full_name: str) -> Descriptor | None:
    try:
        return module.DESCRIPTOR.pool.FindMessageTypeByName(full_name)
    except KeyError:
        return None


def _own_messages(messages: list[Descriptor]) -> set[str]:
    """Messages reachable only through tidal's extension fields (numbers >= 1000)."""
    own: set[str] = set()
    pending = [
        f.message_type
        for m in messages
        for f in m.fields
        if f.number >= EXTENSION_FIELD_NUMBERS and f.message_type is not None
    ]
    while pending:
        message = pending.pop()
        if message.full_name not in own:
            own.add(message.full_name)
            pending.extend(f.message_type for f in message.fields if f.message_type is not None)
    return own


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["grpc_service", "model_config"])
def test_messages_match_tritonclient(ours: FileDescriptor, theirs: object) -> None:
    assert ours.package == theirs.DESCRIPTOR.package == "inference"
    messages = list(_messages(ours))
    assert messages
    own = _own_messages(messages)
    compared = 0
    for message in messages:
        other = _triton_message(theirs, message.full_name)
        if other is None:
            assert message.full_name in own, f"{message.full_name} is not in tritonclient's proto"
            continue
        for field in message.fields:
            where = f"{message.full_name}.{field.name}"
            if field.number >= EXTENSION_FIELD_NUMBERS:
                # tidal's own: must not collide with anything of Triton's.
                assert field.name not in other.fields_by_name, where
                assert field.number not in other.fields_by_number, where
                continue
            assert field.name in other.fields_by_name, f"{where} is not in tritonclient's proto"
            match = other.fields_by_name[field.name]
            assert field.number == match.number, where
            assert field.type == match.type, where
            assert field.is_repeated == match.is_repeated, where
            assert _type_name(field) == _type_name(match), where
            oneof = field.containing_oneof
            other_oneof = match.containing_oneof
            assert (oneof and oneof.name) == (other_oneof and other_oneof.name), where
            compared += 1
        if message.GetOptions().map_entry:
            assert other.GetOptions().map_entry, message.full_name
    assert compared > 30


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["grpc_service", "model_config"])
def test_enums_match_tritonclient(ours: FileDescriptor, theirs: object) -> None:
    enums = list(_enums(ours))
    if ours is model_config_pb2.DESCRIPTOR:
        assert {e.name for e in enums} >= {"DataType", "Kind", "TimeoutAction"}
    for enum in enums:
        other = theirs.DESCRIPTOR.pool.FindEnumTypeByName(enum.full_name)
        for value in enum.values:
            assert value.name in other.values_by_name, f"{enum.full_name}.{value.name}"
            assert value.number == other.values_by_name[value.name].number, value.name


def test_service_matches_tritonclient() -> None:
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    # Every call tritonclient makes of a KServe server, and nothing it lacks.
    called = {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    assert set(ours.methods_by_name) == called
    for name, method in ours.methods_by_name.items():
        other = theirs.methods_by_name[name]
        assert method.input_type.full_name == other.input_type.full_name, name
        assert method.output_type.full_name == other.output_type.full_name, name
        assert method.client_streaming == other.client_streaming, name
        assert method.server_streaming == other.server_streaming, name


def test_committed_stubs_are_freshly_generated(tmp_path: Path) -> None:
    written = _protogen.generate(PROTO_DIR, tmp_path)
    names = sorted(p.name for p in written)
    assert names == [
        "grpc_service_pb2.py",
        "grpc_service_pb2.pyi",
        "grpc_service_pb2_grpc.py",
        "model_config_pb2.py",
        "model_config_pb2.pyi",
    ]
    for path in written:
        committed = _protogen.PACKAGE_DIR / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} differs from what `python -m tidal._protogen` generates"
        )


def test_stubs_do_not_clash_with_tritonclient() -> None:
    """Both sets of `inference.*` messages live in one process (tidal's private pool)."""
    ours = grpc_service_pb2.ModelInferRequest(model_name="m", id="1")
    theirs = triton_service.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.id) == ("m", "1")
    assert grpc_service_pb2.DESCRIPTOR.pool is not triton_service.DESCRIPTOR.pool


# ---------------------------------------------------------------- health and reflection


@pytest.fixture
def channel(server: TidalServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc) as c:
        yield c


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_serving(channel: grpc.Channel) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert _health(channel, "") == serving
    assert _health(channel, "inference.GRPCInferenceService") == serving
    assert _health(channel, "mlp") == serving


def test_health_of_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _health(channel, "no_such_model")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert _health(channel, "") == health_pb2.HealthCheckResponse.SERVING


def test_health_follows_unload_and_load(channel: grpc.Channel, server: TidalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        assert _health(channel, "reloadable") == health_pb2.HealthCheckResponse.SERVING
        client.unload_model("reloadable")
        try:
            assert _health(channel, "reloadable") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert _health(channel, "") == health_pb2.HealthCheckResponse.SERVING
        finally:
            client.load_model("reloadable")
        assert _health(channel, "reloadable") == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.close()


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> object:
    # tonic serves reflection v1; its messages are v1alpha's, so grpcio-reflection's
    # generated classes serialize them.
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([request]), timeout=10))
    return response


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    services = {s.name for s in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_reflection_describes_the_inference_service(channel: grpc.Channel) -> None:
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="inference.GRPCInferenceService"
    )
    response = _reflect(channel, request)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    (service_file,) = [f for f in files if f.service]
    methods = {m.name for m in service_file.service[0].method}
    assert "ModelInfer" in methods
    assert "ModelStreamInfer" in methods
    assert service_file.package == "inference"
