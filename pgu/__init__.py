"""pgu: Projected-Gradient Unlearning (Hoang et al., WACV 2024) for PyTorch classifiers.

The public API:

* :class:`GramStats` - additive, uncentred float64 Gram statistics of every Conv2d/Conv1d/Linear input.
* :class:`CoreGradientSpace` - per-layer bases of the retained input space (rank rules "pgu", "energy").
* :class:`GradientProjector`, :class:`ProjectedOptimizer` - updates orthogonal to that space.
* :func:`forget_loss`, :class:`ForgetLoss`, :class:`DepoisonLoss` - the unlearning losses on forget samples.
* :class:`PGUSettings` - every setting of a request but its stopping rule and loss, checked in one place.
* :mod:`pgu.stopping` - when a request stops (:class:`SampleRemovalStop`, :class:`ClassRemovalStop`, ...).
* :func:`unlearn` - one deletion request, end to end.
* :func:`coverage` - every trainable parameter: projected or frozen, and why.
* :mod:`pgu.outputs` - where the logits are in a model's output (tuples, dicts, ``.logits``, ``output=``).

The package's floors (each imports only those below it): :mod:`pgu.gram` and :mod:`pgu.data`;
this core; :mod:`pgu.zoo` (models, recipes, training, run folders); :mod:`pgu.store` and
:mod:`pgu.bench`, which never import each other; the command line (:mod:`pgu.cli`, :mod:`pgu.demo`).
"""

from pgu.coverage import Coverage, coverage
from pgu.gram.layers import UnsupportedLayerError, register_layer, register_transposed_linear
from pgu.losses import DepoisonLoss, ForgetLoss, depoison_loss, forget_loss
from pgu.outputs import OutputError
from pgu.projection import GradientProjector, ProjectedOptimizer, projection_residual
from pgu.settings import PGUSettings
from pgu.stats import GramStats, NotFittedError, StatsMismatchError
from pgu.stopping import ClassRemovalStop, NoStop, PoisonRemovalStop, SampleRemovalStop
from pgu.subspace import CoreGradientSpace, select_rank
from pgu.unlearn import UnlearnResult, unlearn

__version__ = "0.1.0"

__all__ = [
    "GramStats",
    "CoreGradientSpace",
    "GradientProjector",
    "ProjectedOptimizer",
    "forget_loss",
    "depoison_loss",
    "ForgetLoss",
    "DepoisonLoss",
    "PGUSettings",
    "SampleRemovalStop",
    "ClassRemovalStop",
    "PoisonRemovalStop",
    "NoStop",
    "unlearn",
    "UnlearnResult",
    "select_rank",
    "projection_residual",
    "register_layer",
    "register_transposed_linear",
    "coverage",
    "Coverage",
    "OutputError",
    "UnsupportedLayerError",
    "StatsMismatchError",
    "NotFittedError",
    "__version__",
]
