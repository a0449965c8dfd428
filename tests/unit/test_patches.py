"""`cassava.server.patches`: the one module that changes MLServer internals, guarded by a version check."""

from __future__ import annotations

import pytest
from mlserver.grpc import converters, utils

from cassava.server import patches


def test_an_untested_mlserver_release_is_refused_with_the_fix() -> None:
    with pytest.raises(patches.UntestedMLServerError, match=r"MLServer 9\.9\.9 .* install mlserver==1\.7\.1"):
        patches.check_version("9.9.9")


def test_the_installed_release_is_a_tested_one() -> None:
    """The lock pins the release the patches were written against; a bump must revisit them."""
    assert patches.check_version() in patches.TESTED_MLSERVER


def test_apply_is_idempotent_and_patches_once() -> None:
    patches.apply()
    wrapped = converters.inject_raw
    patches.apply()
    assert converters.inject_raw is wrapped
    assert 503 in utils.STATUS_CODE_MAPPING


def test_malformed_raw_contents_are_the_clients_mistake() -> None:
    """mlserver/grpc/converters.py (1.7.1) `inject_raw` raises struct.error on raw contents that do not
    match the shape; after `apply()` that is a 400 naming the input."""
    from mlserver.types import RequestInput

    from cassava.server.protocol import InvalidRequestError

    patches.apply()
    tensor = RequestInput(name="payload", datatype="FP32", shape=[1, 2], data=[])
    with pytest.raises(InvalidRequestError, match="'payload' FP32 \\[1, 2\\]") as caught:
        converters.inject_raw([tensor], [b"\x00\x00"])
    assert caught.value.status_code == 400
