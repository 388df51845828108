"""results/ -> paper_tables/: the paper's tables (Markdown, LaTeX and a CSV twin), figures (PNG) and claims
verdicts; and one flat CSV of runs per experiment, ``results/<experiment>.csv``.

    python -m analysis [--results-dir results] [--out paper_tables]

Tables are pure functions of the records under ``results/`` (see ``experiments/common/records.py``): the
same records give the same bytes on any machine.
Each table/figure group is one module registering a builder in ``registry.BUILDERS``; the paper's own
numbers are typed in once in ``paper_values``. A new group is one module plus one name in
``BUILDER_MODULES`` below.
"""

import importlib

# Builder modules, in the order their sections appear in paper_tables/README.md.
BUILDER_MODULES = ("no_free_lunch", "efficiency", "figure2", "complexity", "fig1", "nlg", "nlg_eval", "trainer_bench", "pareto", "glue", "vtab")

for _name in BUILDER_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
