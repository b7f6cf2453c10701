"""Kubeflow: the task that makes the cache see the data.

KFP keys a cached task on its inputs, and a step's config names where the data is, not what it holds: new data at the
same `data.path` would hit the cache and republish last week's model. So each run starts with `data_digest`, never
cached, which computes `modelpress.io.data.source_digest` (file contents, an s3:// listing, nothing loaded) in the
base image; its output is an input of every cached task that reads the data, which ignores it except as a key.
No `from __future__ import annotations` here: KFP reads the component's real annotations.
"""

import functools
from typing import Optional

from kfp import dsl

from modelpress.contract.images import image_for


def data_digest(data: str, storage: str, data_uri: Optional[str] = None) -> str:  # noqa: UP045 (KFP reads the annotation)
    """The digest of the data this run reads: `data` is the data spec's JSON, `data_uri` the run's data parameter."""
    import json

    from pydantic import TypeAdapter

    from modelpress.contract.data_sources import DataSpec
    from modelpress.contract.schema import StorageSettings
    from modelpress.io import storage as object_storage
    from modelpress.io.data import source_digest

    values = json.loads(data)
    if data_uri is not None:  # the run parameter overrides data.path in every task reading the data
        values["path"] = data_uri
    object_storage.configure(StorageSettings.model_validate_json(storage))
    return source_digest(TypeAdapter(DataSpec).validate_python(values))


@functools.cache
def data_digest_component(repository: Optional[str] = None, tag: Optional[str] = None):  # noqa: UP045
    return dsl.component(base_image=image_for("base", repository=repository, tag=tag), install_kfp_package=False)(data_digest)
