"""A release's values, and the fingerprint of what was deployed.

The values are the chart's, then the operator's image override, then the pipeline's
``values`` and ``scaling``, then what the deployer injects, which always wins. The
fingerprint (chart, version, values; the token by digest) goes into the release's
description, so that a stale release can be told from a current one without the token
ever being shown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from services.deploy.charts import merge_values
from services.deploy.helm._sources import ChartSource
from services.store.control import Pipeline

_DESCRIPTION_PREFIX = "wsched "


def release_values(
    pipeline: Pipeline,
    token: str,
    *,
    scheduler: str,
    worker_image: str | None,
    autoscaler: str,
    observability: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values a pipeline's release is installed with (see the module's docstring)."""
    values: dict[str, Any] = {}
    if worker_image:
        values = {"image": image_values(worker_image)}
    values = merge_values(values, pipeline.values)
    if pipeline.scaling:
        values = merge_values(values, {"scaling": dict(pipeline.scaling)})
    injected: dict[str, Any] = {
        "pipelineId": pipeline.id,
        "scheduler": {"address": scheduler},
        "workerToken": {"value": token},
    }
    if autoscaler == "builtin":
        injected["scaling"] = {"autoscaler": "builtin"}
    if observability is not None:
        injected["observability"] = dict(observability)
    return merge_values(values, injected)


def image_values(reference: str) -> dict[str, str]:
    """``repository[:tag]`` (a registry's port is not a tag) as the chart's ``image``."""
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return {"repository": reference}
    return {"repository": repository, "tag": tag}


def fingerprint(source: ChartSource, values: Mapping[str, Any]) -> str:
    def hidden(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: (
                    hashlib.sha256(str(v).encode()).hexdigest() if k == "workerToken" else hidden(v)
                )
                for k, v in value.items()
            }
        return value

    document = {
        "ref": source.ref if source.repo or not source.digest else "",
        "repo": source.repo,
        "version": source.version,
        "digest": source.digest,
        "values": hidden(values),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def release_description(source: ChartSource, values: Mapping[str, Any]) -> str:
    """What the release's description says about what was deployed."""
    return _DESCRIPTION_PREFIX + fingerprint(source, values)
