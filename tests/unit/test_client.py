"""`cassava.client` without a server: where a target string points, and how images travel."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from cassava.client import Target, images_request_payload


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("http://localhost:8080", Target("rest", "localhost:8080"), id="http"),
        pytest.param("http://localhost:8080/", Target("rest", "localhost:8080"), id="trailing-slash"),
        pytest.param("localhost:8080", Target("rest", "localhost:8080"), id="no-scheme-is-http"),
        pytest.param(
            "https://models.example.com", Target("rest", "models.example.com", ssl=True), id="https"
        ),
        pytest.param("grpc://127.0.0.1:8081", Target("grpc", "127.0.0.1:8081"), id="grpc"),
        pytest.param(
            "http://localhost:8080/seldon/default/cassava",
            Target("rest", "localhost:8080/seldon/default/cassava"),
            id="seldon-ingress-path",
        ),
        pytest.param(
            "http://localhost:8080/v2/models/cassava/infer",
            Target("rest", "localhost:8080"),
            id="full-infer-url",
        ),
        pytest.param(
            "https://ingress.example.com/seldon/prod/cassava/v2/models/cassava/infer",
            Target("rest", "ingress.example.com/seldon/prod/cassava", ssl=True),
            id="full-seldon-infer-url",
        ),
        pytest.param("http://h:8080/v2/models/cassava", Target("rest", "h:8080"), id="model-url"),
        pytest.param("http://h:8080/v2", Target("rest", "h:8080"), id="v2-url"),
    ],
)
def test_target_parse(target: str, expected: Target) -> None:
    assert Target.parse(target) == expected


@pytest.mark.parametrize("target", ["ftp://host/model", "file:///tmp/model"])
def test_target_parse_refuses_other_schemes(target: str) -> None:
    with pytest.raises(ValueError, match="unsupported target"):
        Target.parse(target)


IMAGES = [b"\xff\xd8\xff\xe0 a jpeg", b"\x89PNG\r\n\x1a\n a png", b""]


def test_images_travel_as_raw_bytes_over_grpc() -> None:
    payload = images_request_payload(IMAGES, "grpc")
    assert payload.dtype == np.object_
    assert payload.shape == (len(IMAGES),)
    assert list(payload) == IMAGES


def test_images_travel_as_base64_text_over_rest() -> None:
    # MLServer speaks no binary-tensor extension: BYTES in JSON are strings, so the files are base64.
    payload = images_request_payload(IMAGES, "rest")
    assert payload.dtype == np.object_
    assert payload.shape == (len(IMAGES),)
    assert [base64.b64decode(item, validate=True) for item in payload] == IMAGES
    assert all(item.isascii() for item in payload)
