"""pgu: Projected-Gradient Unlearning (Hoang et al., WACV 2024) for PyTorch classifiers.

The public API:

* :class:`GramStats` - additive, uncentred float64 Gram statistics of every Conv2d/Linear input.
* :class:`CoreGradientSpace` - per-layer bases of the retained input space (rank rules "pgu", "energy").
* :class:`GradientProjector`, :class:`ProjectedOptimizer` - updates orthogonal to that space.
* :func:`forget_loss` - the unlearning loss on forget samples.
* :func:`unlearn` - one deletion request, end to end.
"""

from .layers import UnsupportedLayerError, register_layer
from .losses import forget_loss
from .projection import GradientProjector, ProjectedOptimizer, projection_residual
from .stats import GramStats, NotFittedError, StatsMismatchError
from .subspace import CoreGradientSpace, select_rank
from .unlearn import UnlearnResult, unlearn

__version__ = "0.1.0"

__all__ = [
    "GramStats",
    "CoreGradientSpace",
    "GradientProjector",
    "ProjectedOptimizer",
    "forget_loss",
    "unlearn",
    "UnlearnResult",
    "select_rank",
    "projection_residual",
    "register_layer",
    "UnsupportedLayerError",
    "StatsMismatchError",
    "NotFittedError",
    "__version__",
]
