"""Reading YAML from users safely (bounded size, depth and integers) and pointing at the line a problem is on."""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml
from pydantic import ValidationError

from modelpress.common.errors import UserError
from modelpress.common.names import NAME_PATTERN
from modelpress.contract.data_sources import DATA_SOURCES
from modelpress.contract.schema import CREDENTIAL_FIELDS

# Bounds on what a workflow file may make the parser do: a YAML file is input from users and from DAG folders.
MAX_WORKFLOW_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # after aliases are expanded: an alias bomb is a few lines that expand to billions
MAX_YAML_DEPTH = 64
MAX_YAML_INT_DIGITS = 19  # 64-bit integers; anything longer is a typo or an attack, never a setting


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses integers beyond 64 bits instead of building (or refusing with a traceback)
    arbitrarily large ones."""

    def construct_yaml_int(self, node):
        digits = node.value.replace("_", "").lstrip("+-")
        if len(digits) > MAX_YAML_INT_DIGITS + 2:  # 0x/0o/0b prefixes
            raise yaml.constructor.ConstructorError(None, None, f"integer {node.value[:24]}... is too large", node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value) >= 2**63:
            raise yaml.constructor.ConstructorError(None, None, f"integer {node.value[:24]} is too large", node.start_mark)
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def check_yaml_size(node: yaml.Node) -> None:
    """Refuse a document whose alias-expanded size or nesting exceeds the bounds, before anything is constructed."""
    expanded: dict[int, int] = {}  # node id -> nodes it expands to (aliases point at shared node objects)
    open_nodes: set[int] = set()

    def size(current: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        if id(current) in open_nodes:
            raise UserError(f"line {current.start_mark.line + 1}: an alias refers to the value that contains it")
        if id(current) in expanded:
            return expanded[id(current)]
        open_nodes.add(id(current))
        children = []
        if isinstance(current, yaml.SequenceNode):
            children = current.value
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_YAML_NODES:
            raise UserError(f"expands to more than {MAX_YAML_NODES:,} values (anchors and aliases included)")
        open_nodes.discard(id(current))
        expanded[id(current)] = total
        return total

    size(node, 0)


def parse_yaml(text: str, where: str) -> Any:
    """The data of a YAML document within the bounds; every problem is one line naming `where` and the line."""
    try:
        node = yaml.compose(text, Loader=BoundedLoader)
        if node is None:
            return None
        try:
            check_yaml_size(node)
        except UserError as exc:
            raise UserError(f"{where}: {exc}; simplify the file") from None
        loader = BoundedLoader(text)
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{where}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc}); fix the syntax") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read; simplify the file") from None



def describe_validation_error(exc: ValidationError, data: Any, source: str, text: str | None) -> str:
    """One line for the first problem: where it is (file, line, dotted key) and what to do."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    keys = input_path(data, first["loc"])
    dotted = ".".join(str(k) for k in keys) or "(top level)"
    line = yaml_line(text, keys) if text else None
    where = f"{source}" + (f" line {line}" if line else "")
    message = first["msg"].removeprefix("Value error, ")
    unknown = re.match(r"(?:unknown|renamed) key '([^']*)'", message)
    if unknown:  # point at the offending key's own line
        line = yaml_line(text, [*keys, unknown.group(1)]) if text else line
        where = f"{source}" + (f" line {line}" if line else "")
    if first["type"] == "union_tag_invalid":
        tag, expected = first["ctx"]["tag"], [t.strip(" '") for t in first["ctx"]["expected_tags"].split(",")]
        close = difflib.get_close_matches(tag, expected, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(expected)}"
        message = f"unknown {first['ctx']['discriminator'].strip(chr(39))} '{tag}'; {hint}"
    elif first["type"] == "string_pattern_mismatch" and first["ctx"].get("pattern") == NAME_PATTERN:
        message = f"use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit (got {first['input']!r})"
    elif first["type"] == "missing":
        message = f"required key '{keys[-1] if keys else first['loc'][-1]}' is missing"
        dotted = ".".join(str(k) for k in keys[:-1]) or "(top level)"
    elif first["type"] not in ("value_error", "assertion_error") and "input" in first:
        shown = "a value not shown: it is a credential" if keys and keys[-1] in CREDENTIAL_FIELDS else repr(first["input"])
        message = f"{message} (got {shown})"
    more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {dotted}: {message}{more}"


def input_path(data: Any, loc: tuple) -> list:
    """The loc without pydantic's union tags: only the keys and indexes that exist in the user's data."""
    path, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(part, str) and part not in ("function-after", "function-before") and not part.startswith(
            tuple(DATA_SOURCES)
        ):
            path.append(part)  # a missing key: name it
            node = None
    return path


def yaml_line(text: str, keys: list) -> int | None:
    """1-based line of the deepest key in `keys` that the YAML text contains."""
    try:
        node = yaml.compose(text, Loader=BoundedLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line

