"""``python -m tools.k8s_manifest``: generate k8s/rayservice.yaml from configs/squad.yaml and
k8s/overlay.yaml.

The KubeRay RayService serves the app of configs/squad.yaml; what Kubernetes needs on top (the
cluster: image, resources, head and worker groups; and the few Serve settings that differ on
pods) is in k8s/overlay.yaml, and only there. This command merges the two:

* ``spec.serveConfigV2`` is configs/squad.yaml with the overlay's ``serve`` merged into it
  (:func:`merge`: mappings key by key, lists of named items by ``name``, anything else
  replaced), every change explained by a ``serve_notes`` entry (path -> why), listed in the
  file's header;
* ``spec.rayClusterConfig`` is the overlay's, as is.

Usage (from the repository root)::

    python -m tools.k8s_manifest            # print the manifest
    python -m tools.k8s_manifest --write    # write k8s/rayservice.yaml
    python -m tools.k8s_manifest --check    # exit 1 (and show a diff) if the committed file
                                            # is not what the two files generate
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO / "configs" / "squad.yaml"
OVERLAY = REPO / "k8s" / "overlay.yaml"
MANIFEST = REPO / "k8s" / "rayservice.yaml"
COMMAND = "python -m tools.k8s_manifest --write"
OVERLAY_KEYS = {"header", "metadata", "serve", "serve_notes", "rayClusterConfig"}


def _named(items) -> bool:
    return (
        isinstance(items, list)
        and bool(items)
        and all(isinstance(i, dict) and "name" in i for i in items)
    )


def merge(base, patch):
    """``patch`` merged into a copy of ``base``: mappings key by key, lists whose items all
    have a ``name`` item by item (matched by name; new names appended), anything else
    replaced by the patch's value."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if _named(base) and _named(patch):
        out = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def leaf_paths(node, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of ``node`` (list items with a ``name`` as ``[name]``), as
    tests/unit/test_kuberay_manifest.py addresses the Serve config."""
    if isinstance(node, dict) and node:
        out = []
        for key, value in node.items():
            out += leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if _named(node):
        out = []
        for item in node:
            rest = {k: v for k, v in item.items() if k != "name"}
            out += leaf_paths(rest, f"{prefix}[{item['name']}]") if rest else []
        return out
    return [prefix]


def _covered(path: str, note: str) -> bool:
    return path == note or path.startswith(note + ".") or path.startswith(note + "[")


def _lookup(config, path: str):
    """The value at a dotted path (``[name]`` items) of ``config``."""
    node = config
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            node = next(i for i in node if i.get("name") == part[1:-1])
        else:
            node = node[part]
    return node


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, multi-line strings as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj) -> str:
    return yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=100,
        allow_unicode=True,
    )


def read_overlay(path: Path = OVERLAY) -> dict:
    overlay = yaml.safe_load(path.read_text()) or {}
    unknown = set(overlay) - OVERLAY_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(OVERLAY_KEYS)}")
    missing = {"metadata", "rayClusterConfig"} - set(overlay)
    if missing:
        raise ValueError(f"{path}: missing {sorted(missing)}")
    return overlay


def serve_config(squad: dict, overlay: dict) -> dict:
    """configs/squad.yaml with the overlay's ``serve`` merged in; every change needs a note."""
    patch = overlay.get("serve") or {}
    notes = overlay.get("serve_notes") or {}
    paths = leaf_paths(patch) if patch else []
    unexplained = [p for p in paths if not any(_covered(p, n) for n in notes)]
    if unexplained:
        raise ValueError(f"overlay serve changes without a serve_notes entry: {unexplained}")
    unused = [n for n in notes if not any(_covered(p, n) for p in paths)]
    if unused:
        raise ValueError(f"serve_notes entries that the overlay's serve does not change: {unused}")
    return merge(squad, patch)


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.rstrip("\n").splitlines()]


def header(overlay: dict, serve: dict) -> list[str]:
    lines = [
        f"# Generated by `{COMMAND}` from configs/squad.yaml and",
        "# k8s/overlay.yaml: edit those two, not this file (tests/unit/test_kuberay_manifest.py",
        "# fails when this file is not what they generate).",
        "#",
    ]
    if overlay.get("header"):
        lines += _comment(overlay["header"]) + ["#"]
    lines.append(
        "# The Serve config (serveConfigV2) is configs/squad.yaml with these changes "
        "(k8s/overlay.yaml):"
    )
    for path, why in (overlay.get("serve_notes") or {}).items():
        value = json.dumps(_lookup(serve, path), separators=(", ", ": "))
        lines += textwrap.wrap(
            f"{path} = {value}: {why}",
            width=98,
            initial_indent="#   ",
            subsequent_indent="#       ",
            break_on_hyphens=False,
        )
    return lines


def generate(squad_path: Path = SQUAD, overlay_path: Path = OVERLAY) -> str:
    """The text of k8s/rayservice.yaml."""
    squad = yaml.safe_load(squad_path.read_text())
    overlay = read_overlay(overlay_path)
    serve = serve_config(squad, overlay)
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": overlay["metadata"],
        "spec": {"serveConfigV2": dump(serve), "rayClusterConfig": overlay["rayClusterConfig"]},
    }
    return "\n".join(header(overlay, serve)) + "\n" + dump(manifest)


def check(path: Path = MANIFEST, text: str | None = None) -> list[str]:
    """A unified diff from the committed ``path`` to what is generated ([] when equal)."""
    want = generate() if text is None else text
    have = path.read_text() if path.exists() else ""
    return list(
        difflib.unified_diff(
            have.splitlines(keepends=True), want.splitlines(keepends=True), str(path), "generated"
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.k8s_manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help=f"write {MANIFEST.relative_to(REPO)}")
    what.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the committed manifest is not what is generated",
    )
    args = p.parse_args(argv)
    try:
        text = generate()
    except (ValueError, OSError, yaml.YAMLError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        MANIFEST.write_text(text)
        print(f"wrote {MANIFEST.relative_to(REPO)}")
        return 0
    if args.check:
        diff = check(MANIFEST, text)
        if diff:
            sys.stdout.writelines(diff)
            print(
                f"\n{MANIFEST.relative_to(REPO)} is not what configs/squad.yaml and "
                f"k8s/overlay.yaml generate: run `{COMMAND}`",
                file=sys.stderr,
            )
            return 1
        print(f"{MANIFEST.relative_to(REPO)} is up to date")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
