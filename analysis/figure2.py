"""Fig. 2 of the paper as its three panels: No-Free-Lunch loss curves (left, corrected protocol), init time
(middle) and training-step time (right) against trainable parameters on the paper's 64x64 layer."""

from __future__ import annotations

from . import efficiency, no_free_lunch
from .core import Figure, Results, Section, profile_sort_key
from .paper_values import TABLE12
from .registry import builder
from .style import legend_entries


@builder("fig2", "Fig. 2: No Free Lunch (three panels)")
def build(results: Results) -> Section:
    # one profile per figure, never pooled: the largest-scale one on record for each panel
    nfl, eff = no_free_lunch.collect(results), efficiency.collect(results)
    nfl_profile = min(nfl, key=profile_sort_key, default=None)
    eff_profile = min((p for p in eff if efficiency.PAPER_SIZE in eff[p]), key=profile_sort_key, default=None)
    curves = nfl.get(nfl_profile, {}).get("corrected", {})
    timings = eff.get(eff_profile, {}).get(efficiency.PAPER_SIZE, {})

    def draw(fig) -> None:
        left, middle, right = fig.subplots(1, 3)
        no_free_lunch.draw_curves(left, curves, f"Left: validation loss ({nfl_profile})", TABLE12["eval_interval"])
        efficiency.draw_metric(middle, timings, "init_s", f"Middle: initialisation time (64×64, {eff_profile})")
        efficiency.draw_metric(right, timings, "step_s", f"Right: training-step time (64×64, {eff_profile})")
        handles, labels = legend_entries((left, middle, right))
        if handles:
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.tight_layout()

    return Section(
        key="fig2", title="Fig. 2: No Free Lunch, initialisation time, training time",
        experiments=(no_free_lunch.EXPERIMENT, efficiency.EXPERIMENT),
        figures=[Figure("fig2", "Fig. 2: loss curves (corrected protocol, mean over seeds), init time and step "
                        "time vs trainable parameters (64×64, median with quartile bars)", draw, size=(17.0, 4.6))],
        readme_figures=("fig2",),
    )
