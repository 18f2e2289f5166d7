"""The bench: docs/protocol.md end to end, the unlearning methods compared, metrics, selection and reports.

Floor 3: imports the core, :mod:`pgu.data` and :mod:`pgu.zoo`; never :mod:`pgu.store` or
the command line. Nothing below it imports it.

* :mod:`pgu.bench.config` - :class:`BenchConfig`: a tier, a scenario, methods, seeds, the budget.
* :mod:`pgu.bench.seed` - :class:`SeedRun`: one seed's context, the original, each method's request, scoring.
* :mod:`pgu.bench.runner` - ``pgu bench``: the scenarios over seeds, resumable.
* :mod:`pgu.bench.methods` - every unlearning method behind one interface, and their settings.
* :mod:`pgu.bench.selection` - ``pgu select``: settings chosen on val only.
* :mod:`pgu.bench.metrics` - docs/protocol.md's metrics as pure functions on arrays.
* :mod:`pgu.bench.scoring` - a model's metrics on the forget, retain, val and test sets; ``pgu evaluate``.
* :mod:`pgu.bench.report` - the results table and figures.
"""
