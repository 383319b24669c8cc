"""Figures of what a search traded and how sure its pick is: the Pareto front of a study with
several objectives, and the confirmed configs' spread (mean ± std over their repeated runs).

Pure functions of `PlotRow`s, like `service.plots.figures`; each returns None when the study has
nothing of the kind (one objective, no confirmation run), so the page shows no empty panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.models import TrialRole, TrialState
from service.plots.figures import (
    BEST_COLOR,
    NO_COMPLETE_TRIAL,
    Figure,
    _by_state,
    _empty,
    _layout,
    _marker,
)
from service.plots.repository import PlotRow
from service.studies.confirmation import ConfigRuns, RunStats, rank_by_mean
from service.studies.pareto import pareto_indices

__all__ = ["ConfigRuns", "Objective", "confirmation", "confirmed_configs", "pareto"]


@dataclass(frozen=True)
class Objective:
    metric: str
    maximize: bool

    @property
    def label(self) -> str:
        return f"{self.metric} ({'max' if self.maximize else 'min'})"


def _finite(values: Sequence[float] | None, n: int) -> bool:
    return values is not None and len(values) == n and all(math.isfinite(v) for v in values)


def pareto(rows: Sequence[PlotRow], objectives: Sequence[Objective]) -> Figure | None:
    """Two objectives: every complete trial, infeasible ones marked, and the front drawn.

    The front is the non-dominated set among the feasible trials when any is feasible (as
    `/best`'s `pareto`), ordered by the first objective. Three or four objectives get a note.
    """
    if len(objectives) < 2:
        return None
    title = "Pareto front"
    if len(objectives) > 2:
        names = ", ".join(o.metric for o in objectives)
        return _empty(
            title,
            f"{len(objectives)} objectives ({names}): the front is drawn for two; "
            "GET /api/v1/studies/{study}/best lists the Pareto set (pareto)",
        )
    done = [
        r
        for r in rows
        if r.state == TrialState.complete.value and _finite(r.values, len(objectives))
    ]
    if not done:
        return _empty(title, NO_COMPLETE_TRIAL)
    feasible = [r for r in done if r.feasible is not False]
    pool = feasible or done
    maximize = [o.maximize for o in objectives]
    front = [pool[i] for i in pareto_indices([r.values or [] for r in pool], maximize)]
    on_front = {r.id for r in front}
    data: list[dict[str, Any]] = []
    hover = (
        f"%{{text}}<br>{objectives[0].metric} %{{x:.4g}}<br>"
        f"{objectives[1].metric} %{{y:.4g}}<extra>%{{fullData.name}}</extra>"
    )
    for group, members in _by_state([r for r in done if r.id not in on_front]).items():
        data.append(_points(members, group, _marker(group), hover))
    line = _points(front, "Pareto front", {"color": BEST_COLOR, "size": 10}, hover)
    line.update(mode="lines+markers", line={"color": BEST_COLOR, "width": 2})
    data.append(line)
    figure: Figure = {
        "data": data,
        "layout": _layout(title, objectives[0].label, objectives[1].label),
        "front": [r.number for r in front],
    }
    if len(feasible) < len(done):
        figure["note"] = (
            "x: infeasible (breaks a constraint); the front is drawn among the feasible trials"
            if feasible
            else "no trial meets the constraints yet: the front is drawn among all trials"
        )
    return figure


def _points(
    rows: Sequence[PlotRow], name: str, marker: dict[str, Any], hover: str
) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [(r.values or [])[0] for r in rows],
        "y": [(r.values or [])[1] for r in rows],
        "text": [f"trial {r.number}" for r in rows],
        "marker": marker,
        "hovertemplate": hover,
    }


def confirmed_configs(
    rows: Sequence[PlotRow], extras: Sequence[PlotRow], maximize: bool
) -> list[ConfigRuns]:
    """Each config with confirmation runs (its search run, when plotted, then its repeats),
    ranked as /best ranks them (`service.studies.confirmation.rank_by_mean`)."""
    search = {r.number: r.value for r in rows if r.state == TrialState.complete.value}
    repeats: dict[int, list[float]] = {}
    for r in extras:
        if r.role != TrialRole.confirm.value or r.repeat_of is None or r.value is None:
            continue
        if math.isfinite(r.value):
            repeats.setdefault(r.repeat_of, []).append(r.value)
    configs = []
    for number, values in repeats.items():
        first = search.get(number)
        runs = ([first] if first is not None and math.isfinite(first) else []) + values
        configs.append(ConfigRuns(number, runs))
    return rank_by_mean(configs, maximize)


def _summary(config: ConfigRuns) -> RunStats:
    stats = config.stats()
    assert stats is not None  # ranked configs have two finite runs or more
    return stats


def confirmation(
    rows: Sequence[PlotRow], extras: Sequence[PlotRow], metric: str, maximize: bool
) -> Figure | None:
    """Confirmed configs ranked by their mean, with ± one standard deviation and every run;
    the confirmed winner (best mean) starred."""
    configs = confirmed_configs(rows, extras, maximize)
    if not configs:
        return None
    stats = [_summary(c) for c in configs]
    x = [f"trial {c.trial_number}" for c in configs]
    runs_x = [f"trial {c.trial_number}" for c in configs for _ in c.values]
    runs_y = [v for c in configs for v in c.values]
    winner, winner_stats = configs[0], stats[0]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "runs",
            "x": runs_x,
            "y": runs_y,
            "marker": {"color": "#9a9a9a", "size": 5},
            "hovertemplate": f"%{{x}}: {metric} %{{y:.4g}}<extra>one run</extra>",
        },
        {
            "type": "scatter",
            "mode": "markers",
            "name": "mean ± std",
            "x": x,
            "y": [st.mean for st in stats],
            "error_y": {"type": "data", "array": [st.std for st in stats], "visible": True},
            "customdata": [[st.std, st.n] for st in stats],
            "marker": {"color": "#1f77b4", "size": 9},
            "hovertemplate": "%{x}: %{y:.4g} ± %{customdata[0]:.2g} (n=%{customdata[1]})"
            "<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "markers",
            "name": "confirmed winner",
            "x": [f"trial {winner.trial_number}"],
            "y": [winner_stats.mean],
            "marker": {"color": BEST_COLOR, "size": 16, "symbol": "star"},
            "hovertemplate": f"%{{x}}: best mean {metric} %{{y:.4g}}<extra></extra>",
        },
    ]
    layout = _layout(
        "Confirmed configs: mean ± std over their runs",
        "config (its search trial)",
        f"{metric} ({'higher' if maximize else 'lower'} is better)",
        xaxis={"type": "category", "title": {"text": "config (its search trial)"}},
    )
    return {
        "data": data,
        "layout": layout,
        "winner": winner.trial_number,
        "configs": [
            {"number": c.trial_number, "n": st.n, "mean": st.mean, "std": st.std}
            for c, st in zip(configs, stats, strict=True)
        ],
    }
