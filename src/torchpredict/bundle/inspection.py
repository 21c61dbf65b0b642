"""What `torchpredict inspect` prints: a bundle described from its JSON files, in a few readable lines.

Torch-free on purpose (inspect never imports torch nor reads weights): the model, the inputs with their training
ranges (one line each), the preprocessing steps with their learned state in short form, the heads with their
labels or target scaling. The lists inside a line are cut short, so that a step over 10,000 columns or with a
50,000-token vocabulary is still one line a terminal shows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from torchpredict.messages import counted, one_line, shown

if TYPE_CHECKING:
    from torchpredict.bundle.manifest import Manifest

__all__ = ["describe"]


def describe(manifest: Manifest, schema: dict, preprocessing: dict) -> str:
    """The text `torchpredict inspect` prints, from the manifest and the parsed schema.json and preprocessing.json."""
    lines = [f"bundle {manifest.name!r} (model version {manifest.model_version}, format "
             f"{manifest.format_version}, created {manifest.created_at})",
             f"  written by torchpredict {manifest.producer.get('torchpredict', '?')}, "
             f"torch {manifest.producer.get('torch', '?')}, python {manifest.producer.get('python', '?')}",
             f"  model: {manifest.model.get('format')} ({manifest.model.get('file')})", "  inputs:"]
    for column in schema.get("columns", []):
        nullable = ", nullable" if column.get("nullable") else ""
        lines.append(f"    {column['name']}: {column['dtype']}{nullable} [{column.get('role', 'feature')}]"
                     f"{_stats_text(column.get('stats'))}")
    steps = preprocessing.get("steps") or []
    lines.append("  preprocessing:" if steps else "  preprocessing: none")
    lines += [f"    {_step_text(step)}" for step in steps]
    lines.append("  outputs:")
    lines += [f"    {_head_text(head)}" for head in manifest.heads]
    lines.append(f"  golden examples: {manifest.examples.get('rows')} rows")
    return "\n".join(lines)


def _step_text(step: dict) -> str:
    """"standardize column(s) 'a', 'b': mean_ [1.5, 2], scale_ [0.5, 1]": its learned state in short form
    (its parameters when it learns nothing, like Clip's bounds)."""
    columns = step.get("columns") or []
    settings = step.get("state") or {k: v for k, v in (step.get("params") or {}).items() if v is not None}
    learned = ", ".join(f"{key} {_short(value)}" for key, value in settings.items())
    return one_line(f"{step.get('type')} {counted('column', columns)}" + (f": {learned}" if learned else ""))


def _head_text(head: dict) -> str:
    """"regression: target 'price', scaled: mean 2.5e+05, std 8.1e+04 (...)", or "...: labels ['a', 'b']"."""
    params, state = head.get("params", {}), head.get("state", {})
    text = f"{head.get('type')}: target {_short(params.get('target'))}"
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


def _stats_text(stats: dict | None) -> str:
    if not stats:
        return ""
    if stats.get("categories") is not None:
        return f" categories {len(stats['categories'])}"
    if stats.get("min") is None:
        return ""
    return f" range [{stats['min']:.4g}, {stats['max']:.4g}] mean {stats['mean']:.4g}"
