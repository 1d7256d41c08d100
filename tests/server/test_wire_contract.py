"""The gRPC contract a Go Kiam agent relies on (docs/architecture.md): package ``kiam``, service
``KiamService``, its methods, and every message's field names, numbers and types."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from kiam.wire import kiam_pb2

CONTRACT = {
    "GetPodCredentialsRequest": {"ip": 1, "role": 2},
    "GetPodRoleRequest": {"ip": 1},
    "Role": {"name": 1},
    "Credentials": {
        "code": 1,
        "type": 2,
        "access_key_id": 3,
        "secret_access_key": 4,
        "token": 5,
        "expiration": 6,
        "last_updated": 7,
    },
    "GetHealthRequest": {},
    "HealthStatus": {"message": 1},
}


def test_package_and_service() -> None:
    assert kiam_pb2.DESCRIPTOR.package == "kiam"
    service = kiam_pb2.DESCRIPTOR.services_by_name["KiamService"]
    assert service.full_name == "kiam.KiamService"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "GetPodCredentials": ("GetPodCredentialsRequest", "Credentials"),
        "GetPodRole": ("GetPodRoleRequest", "Role"),
        "GetHealth": ("GetHealthRequest", "HealthStatus"),
    }
    assert all(not (m.client_streaming or m.server_streaming) for m in service.methods)


@pytest.mark.parametrize("message", sorted(CONTRACT))
def test_message_fields(message: str) -> None:
    descriptor = kiam_pb2.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in descriptor.fields} == CONTRACT[message]
    for field in descriptor.fields:
        assert field.type == FieldDescriptor.TYPE_STRING, field.name
        assert not field.message_type


def test_encoding_is_plain_proto3() -> None:
    # what a Go agent puts on the wire for GetPodCredentials(ip, role)
    request = kiam_pb2.GetPodCredentialsRequest(ip="10.1.0.5", role="reader")
    assert request.SerializeToString() == b"\x0a\x0810.1.0.5\x12\x06reader"
