"""Path, query and header parameters the routes share, with the rules the OpenAPI states.

The rules are declared, not enforced, here: a name or id that breaks them cannot exist,
so looking one up answers 404 like any unknown name (a task id given to be stored is
checked where it is taken, answering 422). Declared, they tell clients and contract tests
what a valid request looks like.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Query

from services.api.schemas import NAME_SCHEMA, TASK_ID_SCHEMA

AppName = Annotated[str, Path(description="The application's name.", json_schema_extra=NAME_SCHEMA)]
PipelineName = Annotated[
    str, Path(description="The pipeline's name.", json_schema_extra=NAME_SCHEMA)
]
TaskIdPath = Annotated[str, Path(description="The task's id.", json_schema_extra=TASK_ID_SCHEMA)]
ClientId = Annotated[
    str | None,
    Query(
        alias="id",
        description="Idempotency key: the task's id.",
        json_schema_extra=TASK_ID_SCHEMA,
    ),
]
IdempotencyKey = Annotated[
    str | None, Header(description="Alias of ?id=.", json_schema_extra=TASK_ID_SCHEMA)
]
