"""The pipeline definition: ordered steps, each a list of commands for one executor.

```json
{"pipeline": [
  {"executor": "wget", "commands": ["wget -O /mnt/pipe/image.png {{url}}"]},
  {"executor": "tesseract", "commands": ["tesseract /mnt/pipe/image.png /mnt/pipe/result",
                                         "cat /mnt/pipe/result.txt"]}
], "timeout_s": 600}
```

Templating. ``{{name}}`` is replaced by the task data's field ``name`` as exactly one
shell word: ``shlex.quote`` of the string, or of the compact JSON text of any other JSON
value, so that no task data can ever run as a command (``$(...)``, backticks, ``;``,
quotes, newlines all arrive as literal text). Quoting only protects a word that the
shell reads in plain context, so a definition is refused when a placeholder stands
inside quotes, backticks, ``${...}``, ``$((...))``, a here-document, or right after a
backslash or ``$``: write ``echo {{message}}``, never ``echo "{{message}}"``. What the
command then does with the word is the definition author's business (``sh -c {{x}}``
runs it, by design). A missing field fails the task with an error naming the field
and the step.

Python handlers. A step may name a Python callable instead of commands:
``{"executor": "py", "handler": "mypkg.tasks:resize"}``. Its executor (``wsched
executor``, whose image has ``mypkg`` installed) imports it and calls it with the task's
data (the parsed JSON), in a pool of worker processes by default, so a slow or crashing
handler never stops the agent's heartbeats and a timeout can kill it;
``"pool": "thread"`` runs it on a thread instead (cheaper, but a thread cannot be killed:
past its timeout it is abandoned, still running). The return value, as JSON, is the
step's output: the task's result when it is the last step.

The work directory. Commands refer to the task's shared work directory as
``/mnt/pipe`` (the volume every container of a pipeline pod mounts there). Each task
gets a fresh directory below the agent's work root, and the agent substitutes it for
every ``/mnt/pipe`` path prefix in the commands (``/mnt/pipe/image.png`` becomes
``<root>/task-xyz/image.png``) before filling in the task data, which is never
rewritten. In a pod the root is ``/mnt/pipe`` itself, locally a temporary directory.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

#: The work directory's name in commands.
WORK_DIR = "/mnt/pipe"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WORK_DIR_PREFIX = re.compile(re.escape(WORK_DIR) + r"(?![A-Za-z0-9_.-])")
#: Contexts a quoted word is safe in: top level, ``$(...)`` and ``(...)``.
_PLAIN = frozenset({"$(", "("})
_CONTEXT_NAMES = {
    "'": "single quotes",
    '"': "double quotes",
    "`": "backticks",
    "${": "a ${...} expansion",
    "$((": "an arithmetic $((...)) expansion",
}
_OPENERS = ("$((", "$(", "${", "`", '"', "'", "(")
#: ``package.module:function`` (a dotted attribute path after the colon, as for entry points).
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
HANDLER = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*$")


def check_handler(text: str) -> str:
    """``text`` if it names a callable as ``package.module:function``; ValueError else."""
    if len(text) > 300 or not HANDLER.fullmatch(text):
        raise ValueError(
            f"{text[:100]!r} is not a handler: write package.module:function "
            "(e.g. mypkg.tasks:resize)"
        )
    return text


class DefinitionError(ValueError):
    """The definition file is missing or malformed; the message says where."""


class TemplateError(ValueError):
    """A task's data cannot fill a command's placeholders."""


@dataclass(frozen=True, kw_only=True)
class RenderedStep:
    number: int  # from 1, as a user counts steps
    executor: str
    commands: tuple[str, ...] = ()
    #: A Python callable instead of commands (``package.module:function``).
    handler: str | None = None
    pool: str = "process"

    def describe(self, index: int = 0) -> str:
        if self.handler is not None:
            return f"step {self.number} ({self.executor}), handler {self.handler}"
        return f"step {self.number} ({self.executor}), command {index + 1}"


class Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    executor: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    commands: list[str] | None = Field(default=None, min_length=1)
    #: Or a Python callable the executor calls with the task's data.
    handler: str | None = None
    #: Where a handler runs: ``process`` (killable at its timeout) or ``thread``.
    pool: Literal["process", "thread"] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if (self.commands is None) == (self.handler is None):
            raise ValueError("give a step either commands or a handler, not both or neither")
        if self.pool is not None and self.handler is None:
            raise ValueError("pool applies to a handler step only")
        return self

    @field_validator("handler")
    @classmethod
    def _handler(cls, handler: str | None) -> str | None:
        return None if handler is None else check_handler(handler)

    @field_validator("commands")
    @classmethod
    def _safe_templates(cls, commands: list[str] | None) -> list[str] | None:
        if commands is None:
            return None
        for index, command in enumerate(commands):
            if not command.strip():
                raise ValueError(f"command {index + 1} is empty")
            try:
                check_template(command)
            except ValueError as err:
                raise ValueError(f"command {index + 1} ({command!r}): {err}") from None
        return commands


class PipelineDefinition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: list[Step] = Field(min_length=1)
    #: The pipeline's task timeout; the agent's ``WSCHED_WORKER_TASK_TIMEOUT_S`` otherwise.
    timeout_s: float | None = Field(default=None, gt=0)
    #: Exit codes that mean "retrying will not help" (bad input, say): a command that
    #: exits with one ends the task ``failed`` at once instead of being retried.
    non_retryable_exit_codes: frozenset[int] = Field(default=frozenset())

    def executors(self) -> set[str]:
        return {step.executor for step in self.pipeline}

    def render(self, data: object, *, work_dir: str) -> list[RenderedStep]:
        """The commands for one task: ``/mnt/pipe`` -> ``work_dir``, placeholders filled."""
        rendered = []
        for number, step in enumerate(self.pipeline, start=1):
            if step.handler is not None:  # handlers get the data itself, nothing to fill
                rendered.append(
                    RenderedStep(
                        number=number,
                        executor=step.executor,
                        handler=step.handler,
                        pool=step.pool or "process",
                    )
                )
                continue
            where = f"step {number} ({step.executor})"
            commands = tuple(
                fill(_WORK_DIR_PREFIX.sub(work_dir, command), data, where=where)
                for command in step.commands or ()
            )
            rendered.append(RenderedStep(number=number, executor=step.executor, commands=commands))
        return rendered


# -- loading ----------------------------------------------------------------------------


def load_definition(path: Path) -> PipelineDefinition:
    """Read a JSON (``.json``) or YAML file; raise :class:`DefinitionError` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DefinitionError(f"cannot read the pipeline definition {path}: {err}") from err
    return parse_definition(text, source=str(path), as_json=path.suffix.lower() == ".json")


def parse_definition(text: str, *, source: str, as_json: bool = False) -> PipelineDefinition:
    try:
        raw: Any = json.loads(text) if as_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if as_json else "YAML"
        raise DefinitionError(f"{source} is not valid {kind}: {err}") from err
    try:
        return PipelineDefinition.model_validate(raw)
    except ValidationError as err:
        raise DefinitionError(
            f"{source} is not a pipeline definition ({problems_of(err)}); expected "
            '{"pipeline": [{"executor": "name", "commands": ["..."]}]}'
        ) from None


def problems_of(err: ValidationError) -> str:
    """A file's validation errors in one line, each at its place (``pipeline.0.commands``)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '(top level)'}: {e['msg']}"
        for e in err.errors()
    )


# -- templating -------------------------------------------------------------------------


def fill(command: str, data: object, *, where: str) -> str:
    """Replace each ``{{name}}`` by the quoted value of the task data's field ``name``."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if not isinstance(data, Mapping):
            kind = type(data).__name__ if data is not None else "null"
            raise TemplateError(
                f"{where} needs the field {name!r}, but the task data is a JSON {kind}, "
                "not an object"
            )
        if name not in data:
            raise TemplateError(f"{where} needs the field {name!r}, which the task data lacks")
        return quote_value(data[name], name=name, where=where)

    return PLACEHOLDER.sub(value_of, command)


def quote_value(value: object, *, name: str = "value", where: str = "") -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if "\x00" in text:
        raise TemplateError(
            f"{where}: the field {name!r} contains a NUL character, which no command line can carry"
        )
    return shlex.quote(text)


def check_template(command: str) -> None:
    """Raise ValueError when a placeholder stands where its quoted value would not stay
    one literal word."""
    expected = len(PLACEHOLDER.findall(command))
    if not expected:
        return
    if "<<" in command:
        raise ValueError("placeholders cannot be used in a command with a here-document (<<)")
    stack: list[str] = []
    seen = 0
    i = 0
    while i < len(command):
        match = PLACEHOLDER.match(command, i)
        if match:
            _check_context(match.group(0), stack)
            seen += 1
            i = match.end()
        else:
            end = _advance(command, i, stack)
            seen += len(PLACEHOLDER.findall(command, i, end))  # in a comment: harmless
            i = end
    if stack:
        raise ValueError(f"unterminated {_CONTEXT_NAMES.get(stack[-1], repr(stack[-1]))}")
    if seen != expected:
        raise ValueError("cannot tell where a placeholder stands: make it a word of its own")


def _check_context(placeholder: str, stack: Sequence[str]) -> None:
    for context in stack:
        if context not in _PLAIN:
            raise ValueError(
                f"{placeholder} stands inside {_CONTEXT_NAMES[context]}; write it bare "
                f'(echo {placeholder}, not echo "{placeholder}"): its value is quoted '
                "as one word for you"
            )


def _advance(command: str, i: int, stack: list[str]) -> int:
    """Consume the shell token at ``i``, tracking quoting contexts; return the next index."""
    top = stack[-1] if stack else ""
    char = command[i]
    if top == "'":
        if char == "'":
            stack.pop()
        return i + 1
    if char == "\\":
        if PLACEHOLDER.match(command, i + 1):
            raise ValueError("a placeholder right after a backslash would lose its quoting")
        return i + 2
    closer = _closer(command, i, top)
    if closer:
        stack.pop()
        return i + closer
    if char == "$" and PLACEHOLDER.match(command, i + 1):
        raise ValueError("a placeholder right after '$' is ambiguous: put it apart")
    if top in ("", "$(", "(") and char == "#" and (i == 0 or command[i - 1].isspace()):
        end = command.find("\n", i)  # a comment: quotes in it mean nothing
        return len(command) if end < 0 else end
    for opener in _OPENERS:
        if command.startswith(opener, i) and _opens_in(opener, top):
            stack.append(opener)
            return i + len(opener)
    return i + 1


def _closer(command: str, i: int, top: str) -> int:
    """Length of the token at ``i`` that closes context ``top``, or 0."""
    if top == "$((":
        return 2 if command.startswith("))", i) else 0
    ends = {'"': '"', "`": "`", "${": "}", "$(": ")", "(": ")"}
    return 1 if top in ends and command[i] == ends[top] else 0


def _opens_in(opener: str, top: str) -> bool:
    if top == '"':  # inside double quotes only expansions and backticks start a context
        return opener in ("$((", "$(", "${", "`")
    return top != "$((" or opener in ("$((", "$(", "${", "`")
