"""Just enough of a Dockerfile reader to know what the image runs: stages, ARG defaults, ENV, ENTRYPOINT/CMD.

`cassava build` reads the base image from it; the tests run the final stage's command with its ENV, so
what they check is what the container runs, not a copy of it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::?-([^}]*))?\}|(\w+))")


@dataclass
class Stage:
    base: str
    name: str | None
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    expose: list[str] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    @property
    def command(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _expand(value: str, scope: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        return scope.get(name) or (default if default is not None else "")

    return _VARIABLE.sub(replace, value)


def _pairs(arguments: str, scope: dict[str, str]) -> dict[str, str]:
    pairs = {}
    for word in shlex.split(arguments):
        key, _, value = word.partition("=")
        pairs[key] = _expand(value, scope)
    return pairs


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not an exec-form JSON array: {arguments}")
    return value


def parse(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arguments in instructions(text):
        stage = stages[-1] if stages else None
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=_expand(words[0], global_args), name=name))
        elif keyword == "ARG":
            key, _, default = arguments.partition("=")
            target = stage.args if stage else global_args
            target[key] = default.strip('"') if default else global_args.get(key, "")
        elif stage is None:
            continue
        elif keyword == "ENV":
            stage.env.update(_pairs(arguments, {**stage.args, **stage.env}))
        elif keyword == "LABEL":
            stage.labels.update(_pairs(arguments, {**stage.args, **stage.env}))
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = _exec_form(arguments)
            stage.cmd = []  # as Docker does: a new ENTRYPOINT resets an inherited CMD
        elif keyword == "CMD":
            stage.cmd = _exec_form(arguments)
        elif keyword == "HEALTHCHECK":
            stage.healthcheck = _exec_form(arguments[arguments.index("CMD") + 3 :].strip())
        elif keyword == "USER":
            stage.user = arguments
        elif keyword == "WORKDIR":
            stage.workdir = arguments
        elif keyword == "EXPOSE":
            stage.expose += arguments.split()
        elif keyword == "COPY":
            stage.copies.append(arguments.split())
        elif keyword == "RUN":
            stage.runs.append(arguments)
    return stages


def final_stage(path: Path) -> Stage:
    stages = parse(path.read_text())
    if not stages:
        raise ValueError(f"{path} has no FROM")
    return stages[-1]
