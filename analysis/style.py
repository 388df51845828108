"""How methods look in every table and figure: order, display name, colour, marker."""

from __future__ import annotations

from .paper_values import METHOD_LABELS

# Legend and table order: the reference, the LoRA family, the shared/efficient designs, MiSS last.
METHOD_ORDER = ("full", "lora", "lora_fa", "pissa", "dora", "vera", "adalora", "loha", "prolora", "mos", "mora",
                "miss", "miss_expand")

_COLORS = {
    "full": "#000000", "lora": "#1f77b4", "lora_fa": "#aec7e8", "pissa": "#2ca02c", "dora": "#9467bd",
    "vera": "#8c564b", "adalora": "#e377c2", "loha": "#7f7f7f", "prolora": "#bcbd22", "mos": "#17becf",
    "mora": "#ff9896", "miss": "#d62728", "miss_expand": "#ff7f0e",
}
_MARKERS = {
    "full": "s", "lora": "o", "lora_fa": "o", "pissa": "^", "dora": "v", "vera": "D", "adalora": "P", "loha": "X",
    "prolora": "<", "mos": ">", "mora": "h", "miss": "*", "miss_expand": "*",
}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def color(method: str) -> str:
    return _COLORS.get(method, "#333333")


def marker(method: str) -> str:
    return _MARKERS.get(method, "o")


def ordered(methods) -> list[str]:
    """``methods`` in legend order (unknown ones last, alphabetically)."""
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def emphasis(method: str) -> dict:
    """Line styling: MiSS drawn thicker so it can be found among a dozen curves."""
    return {"linewidth": 2.6 if method == "miss" else 1.4, "zorder": 3 if method == "miss" else 2}


def legend_entries(axes) -> tuple[list, list[str]]:
    """Handles and labels of all ``axes``, one per method, in legend order."""
    by_label: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(text, handle)
    order = [label(m) for m in METHOD_ORDER]
    names = sorted(by_label, key=lambda t: (order.index(t) if t in order else len(order), t))
    return [by_label[n] for n in names], names
