"""Models, training recipes, the trainer and the run folder: what makes a trained model to unlearn from.

Floor 2: imports the core (:mod:`pgu`'s statistics and evaluation) and :mod:`pgu.data`,
never :mod:`pgu.store`, :mod:`pgu.bench` or the command line.

* :mod:`pgu.zoo.models` - the model registry (``build_model``).
* :mod:`pgu.zoo.recipes` - named training recipes (TOML, each value with its source).
* :mod:`pgu.zoo.training` - the seeded trainer (``train_model``).
* :mod:`pgu.zoo.runs` - the run folder (weights in safetensors, config, ids, statistics).
* :mod:`pgu.zoo.workflow` - ``pgu train``: train, take the statistics, write the run.
"""
