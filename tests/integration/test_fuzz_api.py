"""Schemathesis against a running server, from two descriptions of its API:

(a) the OpenAPI document the server itself serves (GET /v2/docs/dataplane.json, MLServer's);
(b) the Open Inference Protocol's REST spec (/work/shared/specs/oip/open_inference_rest.yaml).

Both positive (schema-valid, mostly wrong for this model) and negative (schema-violating) cases. The
property: no client mistake gets a 5xx, every 4xx is JSON with a readable `error`, and the server is
still ready afterwards. The number of cases run is recorded (out/reliability/figures.json).

Both documents need adapting in memory, as they are not quite OpenAPI: MLServer's uses `type: bytes` and
puts its Datatype enum under `components.enums`; the OIP spec writes its paths as `${MODEL_NAME}` with
no `{}` templates, and only in the versioned form (the unversioned form is the one MLServer serves a
model without versions under, so both are fuzzed).
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import reliability_support as rs
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from cassava.contract import MODEL_NAME
from cassava.server.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The workplace's ../shared next to the repository (tests/conftest.py's SHARED), absent from a clone.
OIP_SPEC = Path(__file__).resolve().parents[3] / "shared" / "specs" / "oip" / "open_inference_rest.yaml"
EXAMPLES = 25  # per operation and generation mode
#: (method, path template, status) -> why a 5xx there is not ours to fix. Empty: none was found.
KNOWN_5XX: dict[tuple[str, str, int], str] = {}


def adapt_mlserver(document: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(document).replace('"type": "bytes"', '"type": "string"')
    text = text.replace("#/components/enums/", "#/components/schemas/")
    adapted: dict[str, Any] = json.loads(text)
    adapted["components"].setdefault("schemas", {}).update(adapted["components"].pop("enums", {}))
    return adapted


def adapt_oip(document: dict[str, Any]) -> dict[str, Any]:
    adapted = copy.deepcopy(document)
    paths = {}
    for path, item in document["paths"].items():
        templated = path.replace("${MODEL_NAME}", "{MODEL_NAME}").replace(
            "${MODEL_VERSION}", "{MODEL_VERSION}"
        )
        paths[templated] = item
        if "/versions/{MODEL_VERSION}" in templated:
            unversioned = copy.deepcopy(item)
            unversioned["parameters"] = [
                p for p in item.get("parameters", []) if p["name"] != "MODEL_VERSION"
            ]
            for operation in unversioned.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    operation["operationId"] += "-unversioned"
            paths[templated.replace("/versions/{MODEL_VERSION}", "")] = unversioned
    adapted["paths"] = paths
    return adapted


def problem_with(response: requests.Response) -> str | None:
    """None if the response keeps the error contract, else what is wrong with it."""
    if response.status_code >= 500:
        return f"{response.status_code} for a client's request: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} without a JSON body: {response.text[:300]}"
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip()):
            return f"{response.status_code} without a readable `error`: {response.text[:300]}"
    return None


def fuzz(schema: Any, server: ServerProcess, path_parameter: str) -> tuple[Counter[str], list[str]]:
    """Every operation of `schema`, positive and negative, EXAMPLES cases each."""
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {path_parameter: MODEL_NAME} if f"{{{path_parameter}}}" in operation.path else None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, mode, fixed, server.http_url, session, statuses, problems)
            except Unsatisfiable:
                statuses["no negative case possible"] += 1  # nothing in the operation to violate
    return statuses, problems


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    path_parameters: dict[str, str] | None,
    base_url: str,
    session: requests.Session,
    statuses: Counter[str],
    problems: list[str],
) -> None:
    label = f"{operation.method.upper()} {operation.path} ({mode.value})"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        try:
            response = case.call(base_url=base_url, session=session, timeout=60)
        except (requests.exceptions.InvalidHeader, UnicodeError, ValueError):
            statuses["not sendable"] += 1  # refused by the client library, never sent
            return
        statuses[str(response.status_code)] += 1
        problem = problem_with(response)
        known = KNOWN_5XX.get((operation.method.upper(), operation.path, response.status_code))
        if problem and not known:
            problems.append(f"{label}: {problem}")

    run()


def check(name: str, schema: Any, server: ServerProcess, path_parameter: str) -> None:
    started = time.monotonic()
    statuses, problems = fuzz(schema, server, path_parameter)
    sent = sum(n for status, n in statuses.items() if status.isdigit())
    assert not problems, "\n".join(problems[:20])
    assert sent > 100, statuses
    assert rs.is_ready(server)
    answer = httpx.post(rs.infer_url(server), json=rs.images_body([rs.jpeg()]), timeout=60)
    assert answer.status_code == 200, answer.text[:300]
    rs.record_figures(
        f"fuzz_api_{name}",
        {"cases_sent": sent, "statuses": dict(statuses), "seconds": round(time.monotonic() - started, 1)},
    )


def test_the_servers_own_openapi_document(standin_server: ServerProcess) -> None:
    document = httpx.get(f"{standin_server.http_url}/v2/docs/dataplane.json", timeout=60).json()
    schema = schemathesis.openapi.from_dict(adapt_mlserver(document))
    check("mlserver_dataplane", schema, standin_server, "model_name")


def test_the_open_inference_protocol_spec(standin_server: ServerProcess) -> None:
    if not OIP_SPEC.is_file():
        pytest.skip(f"{OIP_SPEC} is absent: it ships with the workplace's shared specs, not with a clone")
    schema = schemathesis.openapi.from_dict(adapt_oip(yaml.safe_load(OIP_SPEC.read_text())))
    check("oip_rest", schema, standin_server, "MODEL_NAME")
