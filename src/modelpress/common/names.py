"""The one name type for everything that becomes a path or an object key: model, artifact and label names.

A name is 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit, so it can never climb out of
its folder ('..', '/'), hide (a leading '.'), or collide with the registry's own folders (`labels`, `claims` are
names too, but they sit one level below a model, never beside versions; versions are integers).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

from modelpress.common.errors import UserError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def check_name(value: object, what: str) -> str:
    """`value` when it is a valid name; otherwise one line naming `what` it is and the rule."""
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        raise UserError(
            f"{what} {value!r} is not a valid name; use 1-63 lower-case letters, digits, '-' or '_', starting with a "
            "letter or digit"
        )
    return value
