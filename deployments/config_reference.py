"""The configuration reference, rendered from the config models (one source per setting).

Every field's type, default and description come from :mod:`deployments.config` (and
:class:`packing.qa.requests.Limits`); ``docs/configuration.md`` holds the rendered block
between two markers, and a test fails when the page and the code disagree.

    python -m deployments.config_reference                                # print the block
    python -m deployments.config_reference --write docs/configuration.md  # rewrite the page
    python -m deployments.config_reference --check docs/configuration.md  # exit 1 if stale
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from packing.qa.requests import Limits

from .config import AppConfig, PackingKnobs, PrepareShapes, SimDevice

BEGIN = "<!-- BEGIN GENERATED CONFIG REFERENCE -->"
END = "<!-- END GENERATED CONFIG REFERENCE -->"

# (model, where it sits in a Serve config file), in the order the page lists them.
SECTIONS: tuple[tuple[type, str], ...] = (
    (AppConfig, "`applications[].args`"),
    (PrepareShapes, "`args.prepare`"),
    (SimDevice, "`args.sim`"),
    (Limits, "`args.limits`"),
    (PackingKnobs, "the Packer deployment's `user_config` (initial value: `args.packing`)"),
)
_ANCHORS = {model: model.__name__.lower() for model, _ in SECTIONS}


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _constraints(metadata: typing.Iterable) -> list[str]:
    out = []
    for item in metadata:
        for cls, op in (
            (annotated_types.Ge, ">="),
            (annotated_types.Gt, ">"),
            (annotated_types.Le, "<="),
            (annotated_types.Lt, "<"),
        ):
            if isinstance(item, cls):
                out.append(f"{op} {next(iter(dataclasses.astuple(item)))}")
        if isinstance(item, FieldInfo):
            out.extend(_constraints(item.metadata))
    return out


def _type(tp: typing.Any, metadata: typing.Iterable = ()) -> str:
    """A field's type as the config file spells it: ``int (>= 1) | null``, ``"a" | "b"``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(tp)
        return _type(base, [*extra, *metadata])
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type(arg) for arg in typing.get_args(tp)) + _suffix(metadata)
    if origin is typing.Literal:
        return " | ".join(
            f"`{arg}`" if isinstance(arg, str) else f"`{json.dumps(arg)}`"
            for arg in typing.get_args(tp)
        )
    if tp is type(None):
        return "null"
    if origin is list:
        return "list of " + _type(typing.get_args(tp)[0]) + _suffix(metadata)
    if tp is SecretStr:
        return "str"
    if tp in _ANCHORS:
        return f"[{tp.__name__}](#{_ANCHORS[tp]})"
    return getattr(tp, "__name__", str(tp)) + _suffix(metadata)


def _suffix(metadata: typing.Iterable) -> str:
    found = _constraints(metadata)
    return f" ({', '.join(found)})" if found else ""


def _default(value: typing.Any) -> str:
    if value is PydanticUndefined or value is dataclasses.MISSING:
        return "required"
    if type(value) in _ANCHORS:
        return f"[{type(value).__name__}](#{_ANCHORS[type(value)]}) defaults"
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def _rows(model: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every field of a pydantic model or dataclass."""
    rows = []
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            rows.append(
                (
                    name,
                    _type(info.annotation, info.metadata),
                    _default(info.default),
                    info.description or "",
                )
            )
    else:
        hints = typing.get_type_hints(model, include_extras=True)
        for f in dataclasses.fields(model):
            rows.append(
                (
                    f.name,
                    _type(hints[f.name]),
                    _default(f.default),
                    f.metadata.get("description", ""),
                )
            )
    return rows


def missing_descriptions() -> list[str]:
    """``Model.field`` for every field without a description (the page needs them all)."""
    return [
        f"{model.__name__}.{name}"
        for model, _ in SECTIONS
        for name, _, _, text in _rows(model)
        if not text
    ]


def render_reference() -> str:
    """The Markdown reference of every config model, markers included."""
    parts = [
        BEGIN,
        "<!-- Generated by `python -m deployments.config_reference --write "
        "docs/configuration.md` from deployments/config.py; do not edit by hand. -->",
    ]
    for model, where in SECTIONS:
        doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("``", "`")
        parts += [
            "",
            f'<a id="{_ANCHORS[model]}"></a>',
            "",
            f"### {model.__name__}: {where}",
            "",
            " ".join(doc.split()),
            "",
            "| field | type | default | description |",
            "|---|---|---|---|",
        ]
        parts += [
            f"| `{name}` | {_cell(tp)} | {_cell(default)} | {_cell(text)} |"
            for name, tp, default, text in _rows(model)
        ]
    parts += ["", END]
    return "\n".join(parts) + "\n"


def replace_block(page: str, block: str) -> str:
    """``page`` with the text from BEGIN to END (both included) replaced by ``block``."""
    start, stop = page.find(BEGIN), page.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"the page has no {BEGIN} ... {END} block")
    return page[:start] + block.rstrip("\n") + page[stop + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.config_reference", description=__doc__.split("\n\n")[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PAGE", help="replace the generated block in PAGE")
    group.add_argument("--check", metavar="PAGE", help="exit 1 if PAGE's block is stale")
    args = parser.parse_args(argv)
    block = render_reference()
    if not (args.write or args.check):
        sys.stdout.write(block)
        return 0
    path = Path(args.write or args.check)
    page = path.read_text(encoding="utf-8")
    fresh = replace_block(page, block)
    if args.check:
        if fresh != page:
            print(
                f"{path} is stale: run python -m deployments.config_reference --write {path}",
                file=sys.stderr,
            )
            return 1
        return 0
    if fresh != page:
        path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
