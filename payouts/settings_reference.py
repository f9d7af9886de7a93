"""docs/settings.md, generated from the settings model (:class:`payouts.settings.Settings`): every
key with its type, default, environment variable and description, so the page cannot drift
from the code (``payouts config reference`` prints it; tests/test_settings_reference.py fails
when the committed page differs)."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from payouts.settings import Settings

HEADER = """\
# Settings reference

Generated from `payouts/settings.py` by `payouts config reference > docs/settings.md`
(a test fails when this page and the code differ). Do not edit by hand.

Settings come from, highest first: the environment (`PAYOUTS_` + the key, `__` between a table
and its key: `PAYOUTS_POOL__FEE_BPS=150`), the TOML file (`--config FILE`, else
`$PAYOUTS_CONFIG`, else `./payouts.toml` when it exists), the defaults below. A relative path
in the file is relative to the file's folder; one from the environment, to the working
directory. `payouts config check` validates everything `payouts serve` would (one line per
problem, naming the key or the environment variable; exit 2); `payouts config show` prints the
effective values, secrets masked, with the authority public key miners pin.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (types.UnionType, typing.Union):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return f"list of {_type_name(inner)}"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                "Path": "path"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(name: str, info: FieldInfo) -> str:
    if info.is_required():
        return "(required)"
    if name == "data_dir":
        return "`~/.local/share/payouts`"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, list) and all(isinstance(v, int) for v in value) and value:
        return "`[" + ", ".join(f"0x{v:04x}" for v in value) + "]`"
    return f"`{json.dumps(value)}`"


def _bounds(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sign} {v:,}" if isinstance(v, int) else f"{sign} {v}")
        for attr, word in (("min_length", "at least"), ("max_length", "at most")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{word} {v} items")
    return f" ({', '.join(parts)})" if parts else ""


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for a in (annotation, *typing.get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _tables(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[
        tuple[tuple[str, ...], type[BaseModel], list[tuple[str, FieldInfo]]]]:
    plain = []
    nested = []
    for name, info in model.model_fields.items():
        sub = _section_model(info.annotation)
        if sub is None:
            plain.append((name, info))
        else:
            nested.append((name, sub))
    yield prefix, model, plain
    for name, sub in nested:
        yield from _tables(sub, (*prefix, name))


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole reference page (Markdown)."""
    out = [HEADER]
    for path, model, fields in _tables(Settings, ()):
        title = "Top level" if not path else f"`[{'.'.join(path)}]`"
        out.append(f"## {title}\n")
        doc = model.__doc__ if path else None
        if doc:
            out.append(" ".join(doc.split()).replace("``", "`") + "\n")
        out.append("| key | type | default | environment | description |")
        out.append("|---|---|---|---|---|")
        for name, info in fields:
            env = "PAYOUTS_" + "__".join((*path, name)).upper()
            desc = _escape(info.description or "") + _bounds(info)
            out.append(f"| `{name}` | {_type_name(info.annotation)} | {_default(name, info)} | "
                       f"`{env}` | {desc} |")
        out.append("")
    return "\n".join(out)


def write(path: Path) -> None:
    path.write_text(render())


__all__ = ["render", "write"]
