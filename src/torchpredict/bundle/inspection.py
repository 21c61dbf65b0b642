"""What `torchpredict inspect` prints: a bundle described from its JSON files, in a few readable lines.

Torch-free on purpose (inspect never imports torch nor reads weights): the model, the inputs with their training
ranges (one line each), the preprocessing steps with their learned state in short form, the heads with their
labels or target scaling. The lists inside a line are cut short, so that a step over 10,000 columns or with a
50,000-token vocabulary is still one line a terminal shows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from torchpredict.errors import BundleError
from torchpredict.messages import counted, described, one_line, shown

if TYPE_CHECKING:
    from torchpredict.bundle.manifest import Manifest

__all__ = ["describe"]


def describe(manifest: Manifest, schema: Any, preprocessing: Any) -> str:
    """The text `torchpredict inspect` prints, from the manifest and the parsed schema.json and preprocessing.json.

    Their content is the bundle's, so any JSON: a part of the wrong kind is a BundleError naming it, and a value
    is shown as it is, in short, whatever its type."""
    lines = [f"bundle {manifest.name!r} (model version {manifest.model_version}, format "
             f"{manifest.format_version}, created {manifest.created_at})",
             f"  written by torchpredict {_short(manifest.producer.get('torchpredict', '?'))}, "
             f"torch {_short(manifest.producer.get('torch', '?'))}, "
             f"python {_short(manifest.producer.get('python', '?'))}",
             f"  model: {_short(manifest.model.get('format'))} ({_short(manifest.model.get('file'))})", "  inputs:"]
    for i, column in enumerate(_list(_object(schema, "schema.json").get("columns", []), "schema.json: columns")):
        column = _object(column, f"schema.json: column {i}")
        nullable = ", nullable" if column.get("nullable") is True else ""
        lines.append(f"    {_name(column.get('name'))}: {_name(column.get('dtype'))}{nullable} "
                     f"[{_name(column.get('role', 'feature'))}]{_stats_text(column.get('stats'))}")
    steps = _list(_object(preprocessing, "preprocessing.json").get("steps") or [], "preprocessing.json: steps")
    lines.append("  preprocessing:" if steps else "  preprocessing: none")
    lines += [f"    {_step_text(_object(step, f'preprocessing.json: step {i}'))}" for i, step in enumerate(steps)]
    lines.append("  outputs:")
    lines += [f"    {_head_text(_object(head, f'manifest.json: head {i}'))}"
              for i, head in enumerate(_list(manifest.heads, "manifest.json: heads"))]
    examples = manifest.examples if isinstance(manifest.examples, dict) else {}
    lines.append(f"  golden examples: {_short(examples.get('rows'))} rows")
    return "\n".join(lines)


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BundleError(f"{what} must be an object, got {described(value)}")
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise BundleError(f"{what} must be a list, got {described(value)}")
    return value


def _name(value: Any) -> str:
    return value if isinstance(value, str) else _short(value)


def _step_text(step: dict) -> str:
    """"standardize column(s) 'a', 'b': mean_ [1.5, 2], scale_ [0.5, 1]": its learned state in short form
    (its parameters when it learns nothing, like Clip's bounds)."""
    columns = step.get("columns") or []
    state, params = step.get("state"), step.get("params")
    settings = state if isinstance(state, dict) and state else {
        k: v for k, v in (params if isinstance(params, dict) else {}).items() if v is not None}
    learned = ", ".join(f"{key} {_short(value)}" for key, value in settings.items())
    columns = counted("column", columns) if isinstance(columns, list) else f"columns {_short(columns)}"
    if step.get("type") == "image_encode" and isinstance(params, dict):
        learned = f"{_image_ops_text(params.get('ops'))}; {learned}"
    return one_line(f"{_name(step.get('type'))} {columns}" + (f": {learned}" if learned else ""))


def _image_ops_text(ops: Any) -> str:
    """"decode mode 'L' -> resize size [16, 16] -> rescale -> normalize": an image step's operations in short."""
    if not isinstance(ops, list):
        return f"ops {_short(ops)}"
    texts = []
    for op in ops[:12]:
        if not isinstance(op, dict):
            texts.append(_short(op))
            continue
        shown_params = {k: v for k, v in op.items() if k in _IMAGE_OP_SHOWN and v is not None}
        texts.append(" ".join([_name(op.get("op")), *(f"{k} {_short(v)}" for k, v in shown_params.items())]))
    return " -> ".join(texts) + (f" -> … {len(ops):,} operations" if len(ops) > 12 else "")


_IMAGE_OP_SHOWN = ("mode", "size", "interpolation", "padding", "method", "mean", "std", "top", "left", "height",
                   "width")


def _head_text(head: dict) -> str:
    """"regression: target 'price', scaled: mean 2.5e+05, std 8.1e+04 (...)", or "...: labels ['a', 'b']"."""
    params, state = head.get("params"), head.get("state")
    params, state = (params if isinstance(params, dict) else {}), (state if isinstance(state, dict) else {})
    text = f"{_name(head.get('type'))}: target {_short(params.get('target'))}"
    labels = params.get("labels") or state.get("labels_")
    if labels:
        text += f", labels {_short(labels, limit=20)}"
    if head.get("type") == "regression":
        scaled = params.get("scale") and state.get("mean_") is not None
        text += (f", scaled: mean {_short(state['mean_'])}, std {_short(state.get('std_'))} (predictions are "
                 "un-scaled)" if scaled else ", not scaled")
    return one_line(text)


def _short(value: Any, limit: int = 3, depth: int = 2) -> str:
    """A JSON value in a few characters: 4 significant digits, lists as their first `limit` items and their size
    (lists nested deeper than `depth` as their size only)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) == 1 and not isinstance(value[0], list):
            return _short(value[0])
        if depth == 0:
            return f"[{len(value):,} values]"
        items = [_short(v, depth=depth - 1) for v in value[:limit]]
        more = f", … {len(value):,} values" if len(value) > limit else ""
        return f"[{', '.join(items)}{more}]"
    if isinstance(value, dict):
        return f"{{{len(value):,} keys}}"
    return shown(value, limit=30)


def _stats_text(stats: Any) -> str:
    if not stats or not isinstance(stats, dict):
        return ""
    if stats.get("categories") is not None:
        categories = stats["categories"]
        return f" categories {len(categories) if isinstance(categories, list) else _short(categories)}"
    if stats.get("min") is None:
        return ""
    return f" range [{_short(stats.get('min'))}, {_short(stats.get('max'))}] mean {_short(stats.get('mean'))}"
