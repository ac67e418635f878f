"""The race (hydra/sweeper=race): configurations still racing after each round, and the trial-steps each optimizer
spent against what the whole grid would have cost it."""

import numpy as np
from matplotlib.figure import Figure

from harness.report.figures.style import FigureKind, new_figure, optimizer_legend, styled
from harness.report.race import RaceRecord


def draw_race(record: RaceRecord) -> Figure:
    alive, spent = record.alive, record.spent
    multi = spent["task"].nunique() > 1
    present = {
        name: record.colours[name] for name in sorted(spent["optimizer"].unique()) if name in record.colours
    }
    with styled():
        figure = new_figure(11.25, 4.8, 1, 2, top=0.9, wgap=1.0)
        left, right = figure.subplots(1, 2)
        lines = list(alive.groupby(["task", "optimizer"], sort=True))
        for i, ((task, name), rows) in enumerate(lines):
            style = "--" if multi and task != spent["task"].iloc[0] else "-"
            nudge = (i - (len(lines) - 1) / 2) * 0.06  # equal counts stay visible side by side
            y = rows["alive"] + nudge
            left.plot(rows["round"], y, style, color=present.get(name), lw=1.8, marker="o", ms=5)
        left.set_xlabel("round (0: every configuration, before the race)")
        left.set_ylabel("configurations still racing after the round")
        left.xaxis.get_major_locator().set_params(integer=True)
        left.yaxis.get_major_locator().set_params(integer=True)
        left.set_ylim(bottom=0)
        x = np.arange(len(spent))
        colours = [present.get(name) for name in spent["optimizer"]]
        right.bar(x, spent["grid_steps"], 0.7, color="none", edgecolor=colours, lw=1.5, label="whole grid")
        right.bar(x, spent["trial_steps"], 0.7, color=colours, alpha=0.85, label="race")
        for i, row in enumerate(spent.itertuples()):
            share = row.trial_steps / row.grid_steps if row.grid_steps else float("nan")
            right.annotate(f"{share:.0%}", (i, row.trial_steps), ha="center", va="bottom", fontsize=9)
        labels = [f"{t}\n{o}" if multi else o for t, o in zip(spent["task"], spent["optimizer"])]
        right.set_xticks(x, labels)
        right.set_ylabel("trial-steps (filled: the race; outline: the whole grid)")
        figure.suptitle(record.headline, fontsize=10)
        optimizer_legend(figure, present)
    return figure


RACE = FigureKind(
    "race",
    "The race",
    "Left: per optimizer, the configurations (lr, batch size, ...) still racing after each round (lines nudged "
    "apart where they coincide): round 1 trains "
    "every configuration on the first seeds; a configuration is eliminated when the paired t-test against its "
    "optimizer's leader rejects, or when it was pruned at a rung. Right: the trial-steps each optimizer's trials "
    "took (a pruned trial: up to its rung), against the whole grid's (its grid points × their step budget), with "
    "the share spent.",
    draw_race,
    across_tasks=True,
)
