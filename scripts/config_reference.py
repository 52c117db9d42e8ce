"""Print the configuration reference (Markdown) from the pydantic models of ``pipeline/config.py``.

    python scripts/config_reference.py > docs/config.md

One table per section of :class:`pipeline.config.Config`: key, type, default, description. A description is the
field's ``Field(description=...)``, else the comment block right above the field and its trailing comment (pydantic
models), or the field's entry under ``Attributes:`` in the class docstring (the pipeline's dataclasses). The class
docstring heads each table. ``tests/test_docs.py`` checks that docs/config.md is this script's output.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path, PurePath
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import config as config_module  # noqa: E402
from pipeline.paths import ASSETS  # noqa: E402

COMMAND = "python scripts/config_reference.py > docs/config.md"

_CONSTRAINTS = (
    (annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"), (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "≤"), (annotated_types.MultipleOf, "multiple_of", "multiple of"),
    (annotated_types.MinLen, "min_length", "length ≥"), (annotated_types.MaxLen, "max_length", "length ≤"),
)


def _constraints(metadata: list[Any]) -> list[str]:
    out = []
    for m in metadata:
        if isinstance(m, FieldInfo):  # Annotated[float, Field(gt=0)] inside a union
            out += _constraints(list(m.metadata))
            continue
        for kind, attr, word in _CONSTRAINTS:
            if isinstance(m, kind):
                out.append(f"{word} {getattr(m, attr)}")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"pattern `{pattern}`")
    return out


def type_name(tp: Any, metadata: list[Any] | None = None) -> str:
    """A type as a reader writes it: ``float (> 0) | null``, ``"opencv" | "pyav"``, ``list[CameraConfig]``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return type_name(base, [*(metadata or []), *meta])
    cons = _constraints(metadata or [])
    suffix = f" ({', '.join(cons)})" if cons else ""
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        parts = [type_name(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " | ".join(parts) + suffix
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(tp)) + suffix
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]" + suffix
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path" + suffix
    if tp is SecretStr:
        return "string (secret)" + suffix
    names = {str: "string", int: "int", float: "float", bool: "bool"}
    if tp in names:
        return names[tp] + suffix
    return getattr(tp, "__name__", str(tp)) + suffix


def default_text(value: Any) -> str:
    """A default as YAML would spell it; paths under the shipped assets as ``<assets>/...``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PurePath):
        p = Path(value)
        if p.is_absolute() and p.is_relative_to(ASSETS):
            return f"<assets>/{p.relative_to(ASSETS).as_posix()}"
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 10))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _comments_of(cls: type) -> dict[str, str]:
    """Field name -> the comment block right above it plus its trailing comment, from the class's own source."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    src = textwrap.dedent("".join(lines))
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, alone on its line)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            alone = not tok.line[: tok.start[1]].strip()
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), alone)
    cls_node = ast.parse(src).body[0]
    assert isinstance(cls_node, ast.ClassDef)
    out = {}
    for node in cls_node.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        line = node.lineno - 1
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        end = node.end_lineno or node.lineno
        trailing = [comments[n][0] for n in range(node.lineno, end + 1) if n in comments and not comments[n][1]]
        out[node.target.id] = " ".join(above + trailing)
    return out


def _attributes_of(cls: type) -> dict[str, str]:
    """Field name -> its entry under ``Attributes:`` in a Google-style class docstring."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", doc, re.MULTILINE)
    if not match:
        return {}
    out: dict[str, str] = {}
    name = None
    for raw in match.group(1).splitlines():
        entry = re.match(r"^ {4}(\w+):\s*(.*)$", raw)
        if entry:
            name = entry.group(1)
            out[name] = entry.group(2).strip()
        elif name and raw.startswith(" " * 5):
            out[name] += " " + raw.strip()
        elif raw.strip() == "" or not raw.startswith(" "):
            name = None
    return out


def _summary(cls: type) -> str:
    """The class docstring without its Attributes / Raises sections, as one paragraph per blank-line block."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    doc = re.split(r"^(?:Attributes|Raises|Returns):\s*$", doc, flags=re.MULTILINE)[0]
    kept = re.split(r"\n\s*\n", doc.strip())
    rest = re.split(r"^(?:Attributes|Raises|Returns):\s*$", inspect.cleandoc(cls.__doc__ or ""), flags=re.MULTILINE)
    if len(rest) > 1:  # prose after the Attributes section (the dataclasses' reasons for their defaults)
        tail = re.split(r"\n\s*\n", rest[1].strip(), maxsplit=1)
        if len(tail) > 1 and not re.match(r"^(Raises|Returns):", tail[1]):
            kept.append(re.split(r"^(?:Raises|Returns):\s*$", tail[1], flags=re.MULTILINE)[0].strip())
    return "\n\n".join(" ".join(p.split()) for p in kept if p.strip())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    """A table cell of prose: ``<`` and ``>`` outside code spans escaped, so that ``<port>`` is not an HTML tag."""
    parts = _cell(text).split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _see_also(rows: list[tuple[str, str, str, str]], key: str) -> list[tuple[str, str, str, str]]:
    """A field without a description that an earlier field's description names: "See `key.that`"."""
    out: list[tuple[str, str, str, str]] = []
    for name, typ, default, desc in rows:
        if not desc:
            named = [n for n, _, _, d in out if re.search(rf"\b{re.escape(name)}\b", d, re.IGNORECASE)]
            desc = f"See `{key}.{named[0]}`." if named else ""
        out.append((name, typ, default, desc))
    return out


def _field_rows(cls: type) -> list[tuple[str, str, str, str]]:
    rows = []
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        comments: dict[str, str] = {}
        for klass in reversed(cls.__mro__):  # a subclass's comment on a redefined field wins
            if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
                comments.update({k: v for k, v in _comments_of(klass).items() if v or k not in comments})
        for name, info in cls.model_fields.items():
            default = "*required*" if info.is_required() else f"`{_cell(default_text(_default(info)))}`"
            rows.append((name, type_name(info.annotation, list(info.metadata)), default,
                         info.description or comments.get(name, "")))
    else:
        attrs = _attributes_of(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, type_name(hints[f.name]), f"`{_cell(default_text(value))}`", attrs.get(f.name, "")))
    return rows


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def _section_class(tp: Any) -> tuple[type, bool] | None:
    """The model or dataclass a top-level key holds, and whether it is a list of them."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        found = _section_class(item)
        return (found[0], True) if found else None
    if isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp)):
        return tp, False
    return None


def render() -> str:
    """The whole reference, ending in a newline."""
    root = config_module.Config
    out = [
        "# Configuration reference",
        "",
        f"Generated by `{COMMAND}` from the pydantic models in `pipeline/config.py`; do not edit by hand",
        "(`tests/test_docs.py` fails when this file and the models disagree).",
        "",
        _summary(config_module),
        "",
        "`<assets>` is the installed `maskwatch/assets` folder. The ranges in parentheses are checked by pydantic;",
        "the tracking, faces and voting sections are the pipeline's dataclasses, which check their own ranges.",
        "",
        "Sections: " + ", ".join(f"[`{name}`](#{name})" for name in root.model_fields) + ".",
    ]
    for name, info in root.model_fields.items():
        found = _section_class(info.annotation)
        if found is None:
            continue
        cls, is_list = found
        key = f"{name}[]" if is_list else name
        out += ["", f"## {name}", ""]
        text = info.description or _comments_of(root).get(name, "")
        summary = " ".join(
            _summary(k) for k in cls.__mro__
            if k.__dict__.get("__doc__") and k not in (BaseModel, object) and (k is cls or issubclass(k, BaseModel))
        )
        out += [f"`{key}`: {summary}" if summary else f"`{key}`"]
        if text:
            out += ["", text]
        out += ["", "| key | type | default | description |", "|---|---|---|---|"]
        for field, typ, default, desc in _see_also(_field_rows(cls), key):
            out.append(f"| `{key}.{field}` | {_cell(typ)} | {default} | {_prose(desc)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
