"""The pipeline definition: loading, template checks, quoting of task data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from services.worker.definition import (
    DefinitionError,
    PipelineDefinition,
    TemplateError,
    check_template,
    fill,
    load_definition,
    parse_definition,
)

SEED = {
    "pipeline": [
        {"executor": "wget", "commands": ["wget -O /mnt/pipe/image.png {{url}}"]},
        {
            "executor": "tesseract",
            "commands": [
                "tesseract /mnt/pipe/image.png /mnt/pipe/result",
                "cat /mnt/pipe/result.txt",
                "rm /mnt/pipe/result.txt",
            ],
        },
    ]
}

INJECTIONS = [
    "$(touch {pwned})",
    "`touch {pwned}`",
    "; touch {pwned}",
    "x && touch {pwned}",
    "x | touch {pwned}",
    "x\ntouch {pwned}",
    "'; touch {pwned}; '",
    '"; touch {pwned}; "',
    "$'\\x27'; touch {pwned}",
    "\\'; touch {pwned} #",
    "${{IFS}}touch${{IFS}}{pwned}",
    "> {pwned}",
    "-n",
]


def one_step(command: str) -> PipelineDefinition:
    return PipelineDefinition.model_validate(
        {"pipeline": [{"executor": "sh", "commands": [command]}]}
    )


def run_sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("template", INJECTIONS)
def test_task_data_reaches_the_command_as_one_literal_word(template: str, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    payload = template.format(pwned=pwned)
    # printf rather than echo: dash's echo interprets backslashes and -n
    command = fill("printf '%s|' {{message}} {{message}}", {"message": payload}, where="step 1")
    done = run_sh(command, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{payload}|{payload}|"
    assert not pwned.exists()


@pytest.mark.parametrize(
    ("value", "word"),
    [
        (42, "42"),
        (1.5, "1.5"),
        (True, "true"),
        (None, "null"),
        ({"a": [1, "b c"]}, '{"a":[1,"b c"]}'),
        ("", ""),
        ("naïve ☃", "naïve ☃"),
    ],
)
def test_other_json_values_arrive_as_their_compact_json(
    value: object, word: str, tmp_path: Path
) -> None:
    command = fill("printf '%s|' {{ v }}", {"v": value}, where="step 1")
    assert run_sh(command, tmp_path).stdout == f"{word}|"


def test_a_missing_field_names_the_field_and_the_step() -> None:
    definition = PipelineDefinition.model_validate(SEED)
    with pytest.raises(TemplateError, match=r"step 1 \(wget\) needs the field 'url'"):
        definition.render({"URL": "x"}, work_dir="/w")


def test_data_that_is_not_an_object_cannot_fill_a_placeholder() -> None:
    with pytest.raises(TemplateError, match="the task data is a JSON list, not an object"):
        fill("echo {{a}}", [1, 2], where="step 1 (e)")
    assert fill("echo plain", [1, 2], where="step 1 (e)") == "echo plain"


def test_a_nul_character_fails_the_task() -> None:
    with pytest.raises(TemplateError, match="NUL"):
        fill("echo {{a}}", {"a": "x\x00y"}, where="step 1 (e)")


def test_the_work_dir_replaces_the_mnt_pipe_prefix_only() -> None:
    definition = one_step("cp /mnt/pipe/a /mnt/pipeline/b /mnt/pipe; ls /mnt/pipe/ {{path}}")
    (step,) = definition.render({"path": "/mnt/pipe/x"}, work_dir="/tmp/w/task-1")
    assert step.commands == (
        "cp /tmp/w/task-1/a /mnt/pipeline/b /tmp/w/task-1; ls /tmp/w/task-1/ /mnt/pipe/x",
    )


def test_the_seed_pipeline_renders_in_order() -> None:
    steps = PipelineDefinition.model_validate(SEED).render(
        {"url": "https://some-addr.com/pic.png?a=1&b=2"}, work_dir="/w/t"
    )
    assert [(s.number, s.executor) for s in steps] == [(1, "wget"), (2, "tesseract")]
    assert steps[0].commands == ("wget -O /w/t/image.png 'https://some-addr.com/pic.png?a=1&b=2'",)
    assert steps[1].commands[1] == "cat /w/t/result.txt"
    assert steps[1].describe(1) == "step 2 (tesseract), command 2"


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ('echo "{{m}}"', "inside double quotes"),
        ("echo '{{m}}'", "inside single quotes"),
        ("echo `echo {{m}}`", "inside backticks"),
        ('echo "$(echo {{m}})"', "inside double quotes"),
        ("echo ${X:-{{m}}}", r"inside a \$\{...\} expansion"),
        ("echo $(( {{m}} + 1 ))", "inside an arithmetic"),
        ("cat <<EOF\n{{m}}\nEOF", "here-document"),
        ("echo \\{{m}}", "after a backslash"),
        ("echo ${{m}}", "after '\\$'"),
        ("echo $ {{m}} '", "unterminated single quotes"),
    ],
)
def test_placeholders_where_quoting_cannot_protect_them_are_refused(command: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_template(command)


@pytest.mark.parametrize(
    "command",
    [
        "echo {{m}}",
        "wget -O /mnt/pipe/x --header=X-Id:{{id}} {{url}}",
        "echo $(basename {{m}}) (cd /tmp && ls {{m}})",
        "echo 'it''s' \"$HOME\" {{m}} # don't {{m}}",
        "awk '{print $1}' /mnt/pipe/f; echo {{a}}{{b}}",
        "echo \"{{\" '}}'",  # no placeholder: braces without a name are text
    ],
)
def test_placeholders_in_plain_context_are_accepted(command: str) -> None:
    check_template(command)


def test_load_json_and_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps(SEED))
    as_yaml = tmp_path / "p.yaml"
    as_yaml.write_text(
        "timeout_s: 60\npipeline:\n  - executor: echo\n    commands: ['echo {{message}}']\n"
    )
    assert load_definition(as_json) == PipelineDefinition.model_validate(SEED)
    loaded = load_definition(as_yaml)
    assert loaded.timeout_s == 60 and loaded.executors() == {"echo"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "(top level)"),
        ("{}", "pipeline: Field required"),
        ('{"pipeline": []}', "pipeline: List should have at least 1 item"),
        ('{"pipelines": []}', "pipelines: Extra inputs are not permitted"),
        ('{"pipeline": [{"executor": "e", "commands": []}]}', "pipeline.0.commands"),
        ('{"pipeline": [{"executor": "e", "commands": ["  "]}]}', "command 1 is empty"),
        ('{"pipeline": [{"executor": "a b", "commands": ["x"]}]}', "pipeline.0.executor"),
        (
            '{"pipeline": [{"executor": "e", "commands": ["ok", "echo \\"{{m}}\\""]}]}',
            "command 2 .* stands inside double quotes",
        ),
        ('{"pipeline": [{"executor": "e", "commands": ["x"]}], "timeout_s": 0}', "timeout_s"),
    ],
)
def test_malformed_definitions_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message) as info:
        parse_definition(text, source="defs/p.json", as_json=True)
    assert str(info.value).startswith("defs/p.json")


def test_bad_yaml_and_missing_files_are_definition_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("pipeline: [unclosed\n")
    with pytest.raises(DefinitionError, match="is not valid YAML"):
        load_definition(bad)
    with pytest.raises(DefinitionError, match="cannot read the pipeline definition"):
        load_definition(tmp_path / "missing.yaml")


# -- handler steps -------------------------------------------------------------------------------


def test_a_step_may_name_a_python_handler_instead_of_commands() -> None:
    definition = parse_definition(
        json.dumps(
            {
                "pipeline": [
                    {"executor": "py", "handler": "mypkg.tasks:resize"},
                    {"executor": "py", "handler": "mypkg.tasks:Resizer.run", "pool": "thread"},
                ]
            }
        ),
        source="d.json",
        as_json=True,
    )
    first, second = definition.render({"url": "u"}, work_dir="/w")
    assert (first.handler, first.pool, first.commands) == ("mypkg.tasks:resize", "process", ())
    assert (second.handler, second.pool) == ("mypkg.tasks:Resizer.run", "thread")
    assert first.describe() == "step 1 (py), handler mypkg.tasks:resize"


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        ({"executor": "py", "handler": "no-colon"}, "not a handler"),
        ({"executor": "py", "handler": "mypkg.tasks"}, "not a handler"),
        ({"executor": "py", "handler": "mypkg.tasks:"}, "not a handler"),
        ({"executor": "py", "handler": ":resize"}, "not a handler"),
        ({"executor": "py", "handler": "my-pkg:resize"}, "not a handler"),
        ({"executor": "py", "handler": "a:b", "commands": ["true"]}, "not both or neither"),
        ({"executor": "py"}, "not both or neither"),
        ({"executor": "py", "commands": ["true"], "pool": "thread"}, "handler step only"),
        ({"executor": "py", "handler": "a:b", "pool": "fork"}, "pool"),
    ],
)
def test_a_bad_handler_step_is_refused_saying_why(step: dict[str, object], needle: str) -> None:
    with pytest.raises(DefinitionError, match=needle):
        parse_definition(json.dumps({"pipeline": [step]}), source="d.json", as_json=True)
