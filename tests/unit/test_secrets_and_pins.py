"""Supply-chain posture: no credentials in what ships (the Dockerfile, deploy/, model/), every locked
dependency pinned with hashes, and a vulnerability audit of the locks where the audit service is reachable.

The secret scan checks itself on planted examples first, so that a scanner that matches nothing cannot
pass silently.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = sorted((ROOT / "requirements").glob("*.lock"))
SHIPPED = ["Dockerfile", ".dockerignore", "Makefile", "deploy", "model", "requirements"]

#: (what, pattern). Literal credentials only: a reference (`secretKeyRef`, `${VAR}`, `{{ .Values }}`) is fine.
SECRET_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private key", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),
    # user:password@host, but not an image digest (docker-image://python:3.11-slim@sha256:...)
    ("credentials in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@(?!sha256:)")),
    (
        "a literal assigned to a secret-named key",
        re.compile(
            r"(?i)(?<![A-Za-z])(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|"
            r"client[_-]?secret|auth[_-]?token)(?![A-Za-z])[\"']?[ \t]*[:=][ \t]*[\"']?(?![$\{<])"
            r"([^\s\"'#,}]{8,})"
        ),
    ),
    ("a Kubernetes Secret with data", re.compile(r"(?ms)^kind:\s*Secret\s*$.*?^(?:data|stringData):")),
]


def find_secrets(text: str) -> list[str]:
    return [
        f"{what}: {match.group(0)[:60]!r}"
        for what, pattern in SECRET_PATTERNS
        for match in pattern.finditer(text)
    ]


def shipped_files() -> list[Path]:
    files = []
    for entry in SHIPPED:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return files


def test_the_scanner_finds_planted_secrets() -> None:
    # Assembled at run time, so that this file holds no secret-shaped string itself.
    planted = [
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "aws_access_key_id = AKIA" + "Q" * 16,
        "GITHUB=ghp_" + "a1" * 18,
        "slack: xoxb-" + "1234567890-abcdef",
        "key=AIza" + "B" * 35,
        "Authorization: Bearer eyJ" + "h" * 12 + ".eyJ" + "p" * 12 + "." + "s" * 12,
        "url: https://deploy:" + "hunter2hunter2@registry.example.com/cassava",
        'password: "' + "correct-horse-battery" + '"',
        "MLSERVER_API_TOKEN=" + "0123456789abcdef",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  k: " + "dmFsdWU=",
    ]
    for sample in planted:
        assert find_secrets(sample), f"the scanner misses {sample!r}"
    references = [
        "valueFrom:\n  secretKeyRef:\n    name: registry\n    key: password",
        "password: ${REGISTRY_PASSWORD}",
        "token: {{ .Values.token }}",
        "automountServiceAccountToken: false",
        # a volume from a Kubernetes Secret: the key's value is on the next lines, not a literal
        "- name: ca\n  secret:\n    secretName: seldon-downstream-server",
        "--hash=sha256:286e71c82c1a38e75bbcf185f9b37d0305ad7786535107cb49bf4df9ff2e1f95",
        "https://tfhub.dev/google/cropnet/classifier/cassava_disease_V1/2",
    ]
    for sample in references:
        assert not find_secrets(sample), f"a false alarm on {sample!r}: {find_secrets(sample)}"


def test_nothing_that_ships_holds_a_credential() -> None:
    files = shipped_files()
    assert any(p.name == "Dockerfile" for p in files)
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary: the scan is about text a person could have pasted a key into
        found += [f"{path.relative_to(ROOT)}: {hit}" for hit in find_secrets(text)]
    assert not found, "\n".join(found)


# --- locks -------------------------------------------------------------------------------------------------


def requirements_of(lock: Path) -> list[str]:
    """The lock's requirements, one per entry, with their continuation lines joined."""
    entries, current = [], ""
    for line in lock.read_text().splitlines():
        stripped = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not stripped:
            continue
        current += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            entries.append(current.strip())
            current = ""
    return entries


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_locked_dependency_is_pinned_with_hashes(lock: Path) -> None:
    entries = requirements_of(lock)
    assert len(entries) > 20, f"{lock.name} looks empty"
    unpinned = []
    for entry in entries:
        requirement = entry.split()[0]
        if entry.startswith("-"):
            unpinned.append(f"an option line, not a pinned requirement: {entry[:80]}")
        elif not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+", requirement
        ):
            unpinned.append(f"not pinned with ==: {requirement}")
        elif not re.search(r"--hash=sha256:[0-9a-f]{64}", entry):
            unpinned.append(f"no --hash: {requirement}")
    assert not unpinned, f"{lock.name}:\n" + "\n".join(unpinned)


@pytest.mark.slow
@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_no_locked_dependency_has_a_known_vulnerability(lock: Path) -> None:
    """pip-audit over the lock. It needs PyPI's (or OSV's) vulnerability API; without it, pip-audit marks
    every package "skipped" and still says "No known vulnerabilities found", which is no result at all:
    that is a skip here, never a pass. CI with network access runs the same command with --strict."""
    pip_audit = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    if pip_audit is None:
        pytest.skip("pip-audit is not installed in this environment")
    command = [
        pip_audit,
        "-r",
        str(lock),
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "-f",
        "json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.skip(f"pip-audit gave no report (no vulnerability service reachable?): {result.stderr[-300:]}")
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    if dependencies and len(skipped) == len(dependencies):
        pytest.skip(
            f"the vulnerability service is not reachable from here: all {len(dependencies)} packages of "
            f"{lock.name} were skipped ({skipped[0]['skip_reason']}). In CI: pip-audit -r {lock.name} "
            "--no-deps --disable-pip --strict"
        )
    vulnerable = [
        f"{d['name']} {d['version']}: {[v['id'] for v in d['vulns']]}" for d in dependencies if d.get("vulns")
    ]
    assert not skipped, f"{len(skipped)} packages could not be audited: {skipped[:5]}"
    assert not vulnerable, "\n".join(vulnerable)
