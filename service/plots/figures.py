"""Plot-data builders: Plotly figures (``{"data": [...], "layout": {...}}``) from SQL rows.

Pure functions of `PlotRow`s, per-epoch metrics and the study spec, so they are cheap (one pass
over the rows, no Optuna `Study`) and testable without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.models import TrialState
from service.plots.repository import PlotRow
from trainers.best import is_better
from trainers.params import PARAM_NAMES

__all__ = [
    "Axis",
    "Figure",
    "calibration",
    "curves",
    "gap_curves",
    "history",
    "importance",
    "learning_curves",
    "metric_names",
    "parallel",
    "searched_axes",
    "slices",
    "sparsity",
    "top_trials",
]

Figure = dict[str, Any]

PARAM_LABELS = {
    "weight_decay": "weight decay λ (L2)",
    "l1": "L1 λ",
    "dropout": "dropout p",
    "label_smoothing": "label smoothing ε",
    "batch_size": "batch size",
    "patience": "patience (epochs)",
}
INFEASIBLE = "infeasible"  # a complete trial that breaks one of the study's constraints
STATE_COLORS = {
    TrialState.complete.value: "#1f77b4",
    TrialState.pruned.value: "#9a9a9a",
    TrialState.cancelled.value: "#c7a03c",
    TrialState.fail.value: "#d62728",
    INFEASIBLE: "#e377c2",
}
BEST_COLOR = "#ff7f0e"


@dataclass(frozen=True)
class Axis:
    """How one searched parameter is drawn: log scale for log ranges, categories for choices."""

    name: str
    log: bool = False
    choices: tuple[float, ...] | None = None

    @property
    def label(self) -> str:
        return PARAM_LABELS.get(self.name, self.name)


def searched_axes(spec: dict[str, Any]) -> list[Axis]:
    """The sampled (not fixed) parameters of a stored, normalized spec, in parameter order."""
    axes = []
    space = spec.get("search_space") or {}
    for name in PARAM_NAMES:
        entry = space.get(name)
        if not isinstance(entry, dict) or "fixed" in entry:
            continue
        if "choices" in entry:
            axes.append(Axis(name, choices=tuple(float(c) for c in entry["choices"])))
        else:
            axes.append(Axis(name, log=bool(entry.get("log"))))
    return axes


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "legend": {"orientation": "h", "y": -0.25},
        "hovermode": "closest",
    }
    layout.update(extra)
    return layout


def _empty(title: str, note: str) -> Figure:
    """A figure with nothing to draw: no axes, and the note (why, how to get it) as its caption."""
    hidden = {"visible": False}
    return {"data": [], "layout": _layout(title, "", "", xaxis=hidden, yaxis=hidden), "note": note}


def _valued(rows: Sequence[PlotRow]) -> list[PlotRow]:
    return [r for r in rows if r.value is not None and math.isfinite(r.value)]


def _infeasible(row: PlotRow) -> bool:
    return row.state == TrialState.complete.value and row.feasible is False


def _by_state(rows: Sequence[PlotRow]) -> dict[str, list[PlotRow]]:
    """Rows by state; complete trials that break a constraint form their own "infeasible" group."""
    groups: dict[str, list[PlotRow]] = {}
    for row in rows:
        groups.setdefault(INFEASIBLE if _infeasible(row) else row.state, []).append(row)
    return groups


def _marker(group: str) -> dict[str, Any]:
    marker: dict[str, Any] = {"color": STATE_COLORS.get(group, "#555"), "size": 7}
    if group == INFEASIBLE:
        marker["symbol"] = "x"
    return marker


def history(rows: Sequence[PlotRow], metric: str, maximize: bool) -> Figure:
    """Objective per trial number (a series per state) and the best-so-far line (complete only)."""
    title = "Optimization history"
    valued = _valued(rows)
    if not valued:
        return _empty(title, "no trial has a value yet")
    data: list[dict[str, Any]] = []
    for state, group in _by_state(valued).items():
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": state,
                "x": [r.number for r in group],
                "y": [r.value for r in group],
                "marker": _marker(state),
                "hovertemplate": f"trial %{{x}}<br>{metric} %{{y:.4g}}<extra>{state}</extra>",
            }
        )
    best_x: list[int] = []
    best_y: list[float] = []
    best: float | None = None
    # like /best: only trials that meet the constraints, unless none does
    skip_infeasible = any(
        r.state == TrialState.complete.value and not _infeasible(r) for r in valued
    )
    for row in valued:
        if row.state != TrialState.complete.value or (skip_infeasible and _infeasible(row)):
            continue
        assert row.value is not None
        if is_better(row.value, best, maximize=maximize):
            best = row.value
        assert best is not None  # the first complete row sets it (values here are finite)
        best_x.append(row.number)
        best_y.append(best)
    if best_x:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "best so far",
                "x": best_x,
                "y": best_y,
                "line": {"color": BEST_COLOR, "shape": "hv", "width": 2},
            }
        )
    return {"data": data, "layout": _layout(title, "trial number", metric)}


def _transform(axis: Axis, value: float) -> float:
    return math.log10(value) if axis.log and value > 0 else value


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _eta_squared(xs: Sequence[float], ys: Sequence[float], categorical: bool) -> float:
    """Share of the variance of `ys` explained by binning `xs` (the correlation ratio η²)."""
    n = len(xs)
    if categorical:
        keys = xs
    else:
        n_bins = max(2, min(10, n // 3))
        x_ranks = _ranks(xs)
        keys = [min(int(r * n_bins / n), n_bins - 1) for r in x_ranks]
    mean = sum(ys) / n
    total = sum((y - mean) ** 2 for y in ys)
    if total == 0:
        return 0.0
    sums: dict[float, list[float]] = {}
    for key, y in zip(keys, ys, strict=True):
        sums.setdefault(key, []).append(y)
    between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in sums.values())
    return between / total


MIN_IMPORTANCE_TRIALS = 4


def importance(rows: Sequence[PlotRow], axes: Sequence[Axis]) -> Figure:
    """Parameter importance: η² of the objective's ranks over each parameter's quantile bins.

    A first-order variance decomposition (what fANOVA's main effects estimate) computed in one
    pass over the complete trials, normalized to sum to 1. Ranks make it robust to outliers.
    """
    title = "Parameter importance"
    complete = [r for r in _valued(rows) if r.state == TrialState.complete.value]
    if not axes:
        return _empty(title, "no parameter is searched")
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return _empty(title, f"needs at least {MIN_IMPORTANCE_TRIALS} complete trials")
    y_ranks = _ranks([r.value for r in complete if r.value is not None])
    scores: dict[str, float] = {}
    for axis in axes:
        pairs = [
            (_transform(axis, x), y)
            for r, y in zip(complete, y_ranks, strict=True)
            if (x := r.param(axis.name)) is not None
        ]
        if len(pairs) < MIN_IMPORTANCE_TRIALS:
            continue
        scores[axis.label] = _eta_squared(
            [p[0] for p in pairs], [p[1] for p in pairs], axis.choices is not None
        )
    total = sum(scores.values())
    ordered = sorted(scores.items(), key=lambda kv: kv[1])
    values = [v / total if total > 0 else 0.0 for _, v in ordered]
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "x": values,
            "y": [k for k, _ in ordered],
            "marker": {"color": "#1f77b4"},
            "hovertemplate": "%{y}: %{x:.2f}<extra></extra>",
        }
    ]
    layout = _layout(title, "share of explained variance", "", margin={"l": 150, "r": 20, "t": 40})
    return {"data": data, "layout": layout}


def _scatter_by_state(
    rows: Sequence[PlotRow],
    x_of: Callable[[PlotRow], float | str | None],
    y_of: Callable[[PlotRow], float | None],
    hover: str,
    **trace: Any,
) -> list[dict[str, Any]]:
    """One marker trace per trial state over the rows that have both an x and a y."""
    data = []
    for state, group in _by_state(rows).items():
        points = [
            (r, x, y) for r in group if (x := x_of(r)) is not None and (y := y_of(r)) is not None
        ]
        if not points:
            continue
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": state,
                "x": [x for _, x, _ in points],
                "y": [y for _, _, y in points],
                "text": [f"trial {r.number}" for r, _, _ in points],
                "marker": _marker(state),
                "hovertemplate": hover,
                **trace,
            }
        )
    return data


def _param_xaxis(axis: Axis) -> dict[str, Any]:
    xaxis: dict[str, Any] = {"title": {"text": axis.label}}
    if axis.log:
        xaxis["type"] = "log"
    elif axis.choices is not None:
        xaxis["type"] = "category"
        xaxis["categoryorder"] = "array"
        xaxis["categoryarray"] = [_category(axis, c) for c in sorted(axis.choices)]
    return xaxis


def slices(rows: Sequence[PlotRow], axes: Sequence[Axis], metric: str) -> list[Figure]:
    """One slice plot per searched parameter: objective against the parameter's value."""
    figures = []
    valued = _valued(rows)
    for axis in axes:

        def x_of(r: PlotRow, axis: Axis = axis) -> float | str | None:
            x = r.param(axis.name)
            return None if x is None else _category(axis, x)

        data = _scatter_by_state(
            valued, x_of, lambda r: r.value, "%{text}<br>%{x}: %{y:.4g}<extra></extra>"
        )
        figure: Figure = {
            "param": axis.name,
            "data": data,
            "layout": _layout(
                f"{metric} vs {axis.label}", axis.label, metric, xaxis=_param_xaxis(axis)
            ),
        }
        if not data:
            figure["note"] = "no trial has a value yet"
        figures.append(figure)
    return figures


def _category(axis: Axis, value: float) -> float | str:
    if axis.choices is None:
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def parallel(rows: Sequence[PlotRow], axes: Sequence[Axis], metric: str) -> Figure:
    """Parallel coordinates: one line per trial through every searched parameter and the value."""
    title = "Parallel coordinates"
    valued = [r for r in _valued(rows) if all(r.param(a.name) is not None for a in axes)]
    if not axes:
        return _empty(title, "no parameter is searched")
    if not valued:
        return _empty(title, "no trial has a value yet")
    dimensions: list[dict[str, Any]] = []
    for axis in axes:
        raw = [r.param(axis.name) or 0.0 for r in valued]
        if axis.choices is not None:
            choices = sorted(axis.choices)
            dimensions.append(
                {
                    "label": axis.label,
                    "values": [choices.index(v) if v in choices else -1 for v in raw],
                    "tickvals": list(range(len(choices))),
                    "ticktext": [str(_category(axis, c)) for c in choices],
                    "range": [-0.2, len(choices) - 0.8],
                }
            )
        elif axis.log:
            dimensions.append(
                {"label": f"log10 {axis.label}", "values": [_transform(axis, v) for v in raw]}
            )
        else:
            dimensions.append({"label": axis.label, "values": raw})
    values = [r.value for r in valued]
    dimensions.append({"label": metric, "values": values})
    data = [
        {
            "type": "parcoords",
            "line": {"color": values, "colorscale": "Viridis", "showscale": True},
            "dimensions": dimensions,
        }
    ]
    layout = {"title": {"text": title, "font": {"size": 14}}, "margin": {"l": 70, "r": 70, "t": 80}}
    return {"data": data, "layout": layout}


def top_trials(rows: Sequence[PlotRow], maximize: bool, k: int, with_pruned: bool) -> list[PlotRow]:
    """The `k` best complete trials, plus (when shown) the `k` best-valued pruned ones."""
    valued = _valued(rows)

    def best_of(state: str) -> list[PlotRow]:
        group = [r for r in valued if r.state == state]
        group.sort(key=lambda r: (-(r.value or 0.0) if maximize else (r.value or 0.0), r.number))
        return group[:k]

    chosen = best_of(TrialState.complete.value)
    if with_pruned:
        chosen += best_of(TrialState.pruned.value)
    return chosen


HOW_CLASSIFIER = (
    "declare task='classification' in its Trainer(...) registration "
    "(or task='regression' for the gap alone), see docs/trainers.md"
)


def metric_names(epochs: dict[int, list[dict[str, Any]]], first: str) -> list[str]:
    """Every numeric metric the given trials logged per epoch: `first` (if logged), then A-Z."""
    names = {
        key
        for rows in epochs.values()
        for row in rows
        for key, value in row.items()
        if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)
    }
    return ([first] if first in names else []) + sorted(names - {first})


def curves(
    trials: Sequence[PlotRow],
    epochs: dict[int, list[dict[str, Any]]],
    key: str,
    title: str,
    y_label: str,
    missing: str | None = None,
) -> Figure:
    """Per-epoch `key` of each trial: complete trials solid, pruned trials dotted and grey.

    `missing` is the note when epochs exist but none logged `key` (why, and how to get it).
    """
    data = []
    for rank, row in enumerate(trials):
        points = [(e["epoch"], e[key]) for e in epochs.get(row.id, []) if e.get(key) is not None]
        if not points:
            continue
        pruned = row.state != TrialState.complete.value
        line: dict[str, Any] = {"width": 1 if pruned else 2}
        if pruned:
            line.update(dash="dot", color=STATE_COLORS.get(row.state, "#9a9a9a"))
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"trial {row.number}" + (f" ({row.state})" if pruned else ""),
                "x": [p[0] for p in points],
                "y": [p[1] for p in points],
                "line": line,
                "marker": {"size": 4, "symbol": "x" if pruned else "circle"},
                "opacity": 0.6 if pruned else 1.0,
                "legendrank": rank,
            }
        )
    if not data:
        recorded = any(epochs.get(row.id) for row in trials)
        note = NO_EPOCH
        if recorded:
            note = missing or f"no trial logged {key} per epoch"
        return _empty(title, note)
    return {"data": data, "layout": _layout(title, "epoch", y_label)}


def learning_curves(
    trials: Sequence[PlotRow], epochs: dict[int, list[dict[str, Any]]], objective: str, metric: str
) -> Figure:
    """Curves of `metric` (the objective's by default) with every metric the trials logged.

    `metric` and `metrics` ride along in the figure: the page's selector lists `metrics`.
    """
    logged = metric_names(epochs, objective)
    missing = f"no top trial logged {metric} per epoch"
    if logged:
        missing += f"; they logged: {', '.join(logged)}"
    label = f"{metric} (objective)" if metric == objective else metric
    figure = curves(trials, epochs, metric, f"Learning curves: {metric}", label, missing)
    figure["metric"] = metric
    figure["metrics"] = logged
    return figure


def gap_curves(trials: Sequence[PlotRow], epochs: dict[int, list[dict[str, Any]]]) -> Figure:
    """Per-epoch `gap` (validation loss minus training loss, both in eval mode)."""
    return curves(
        trials,
        epochs,
        "gap",
        "Generalization gap of the top trials",
        "gap: val loss - train loss (eval mode)",
        f"this trainer logs no gap: {HOW_CLASSIFIER}",
    )


# the panels' notes while they have nothing to draw: only complete (and, when shown, pruned)
# trials are drawn, so a study whose trials all failed is "not yet", not "never recorded"
NO_COMPLETE_TRIAL = "no trial has completed yet"
NO_EPOCH = "no complete or pruned trial has recorded an epoch yet"


def _no_trial_yet(rows: Sequence[PlotRow]) -> bool:
    return not any(r.state == TrialState.complete.value for r in rows)


def calibration(rows: Sequence[PlotRow], smoothing_searched: bool) -> Figure:
    """Expected calibration error (val_ece at the best epoch) against label smoothing ε."""
    title = "Calibration: ECE vs label smoothing"
    data = _scatter_by_state(
        rows,
        lambda r: r.param("label_smoothing"),
        lambda r: r.val_ece,
        "%{text}<br>ε %{x:.3f}: ECE %{y:.3f}<extra></extra>",
    )
    if not data:
        if _no_trial_yet(rows):
            return _empty(title, NO_COMPLETE_TRIAL)
        if all(r.val_ece is None for r in rows):
            return _empty(title, f"this trainer logs no val_ece: {HOW_CLASSIFIER}")
        return _empty(title, "no trial recorded a label smoothing ε beside its val_ece")
    figure: Figure = {
        "data": data,
        "layout": _layout(title, "label smoothing ε", "val ECE (lower is better calibrated)"),
    }
    if not smoothing_searched:
        figure["note"] = "label smoothing is fixed in this study: every trial shares one ε"
    return figure


def _axis_of(axes: Sequence[Axis], name: str) -> Axis:
    return next((a for a in axes if a.name == name), Axis(name))  # fixed: one value, linear


def sparsity(rows: Sequence[PlotRow], axes: Sequence[Axis]) -> Figure:
    """Best-epoch sparsity and weight size against the penalties that drive them.

    Left: share of near-zero weights vs L1 λ; right: the weights' L2 norm vs weight decay λ.
    """
    title = "Sparsity: near-zero weights vs L1, weight norm vs weight decay"
    l1, wd = _axis_of(axes, "l1"), _axis_of(axes, "weight_decay")
    left = _scatter_by_state(
        rows,
        lambda r: r.param("l1"),
        lambda r: r.near_zero_frac,
        "%{text}<br>L1 λ %{x:.3g}: near-zero %{y:.3f}<extra></extra>",
    )
    right = _scatter_by_state(
        rows,
        lambda r: r.param("weight_decay"),
        lambda r: r.weight_l2,
        "%{text}<br>λ %{x:.3g}: ‖w‖₂ %{y:.4g}<extra></extra>",
        xaxis="x2",
        yaxis="y2",
        showlegend=False,
    )
    if not left and not right:
        if _no_trial_yet(rows):
            return _empty(title, NO_COMPLETE_TRIAL)
        return _empty(
            title,
            "no trial recorded near_zero_frac or weight_l2: regtune computes both for every "
            "module at each epoch (docs/trainers.md); trials run by an older worker lack them",
        )
    notes = [
        f"{axis.label} is fixed in this study: every trial shares one λ"
        for axis in (l1, wd)
        if axis.name not in {a.name for a in axes}
    ]
    layout = _layout(title, l1.label, "share of |w| near zero")
    # two half-width panels: few ticks, or log axes' minor labels run into each other
    layout["xaxis"].update(domain=[0.0, 0.44], anchor="y", nticks=4, **_log(l1))
    layout["xaxis2"] = {
        "title": {"text": wd.label},
        "domain": [0.56, 1.0],
        "anchor": "y2",
        "nticks": 4,
    }
    layout["xaxis2"].update(_log(wd))
    layout["yaxis2"] = {"title": {"text": "weight L2 norm"}, "anchor": "x2"}
    figure: Figure = {"data": left + right, "layout": layout}
    if notes:
        figure["note"] = "; ".join(notes)
    return figure


def _log(axis: Axis) -> dict[str, Any]:
    return {"type": "log"} if axis.log else {}
