"""The import path of the classes registered models pickle: each family's public face.

A registered version's artifact is a joblib pickle of the family object, and a pickle names every
class in it by ``module.qualname``. The families' code lives in packages (``forecasting/``,
``lead_scoring/``), but each class whose instances a registered model holds is declared with
``@pickled_as(<the family's public face>)``: its ``__module__`` is the face
(``neuracrm_mlops.models.lead_scoring_model``, ...), which re-exports it. So every pickle names the
same path as before the families became packages, whichever module defines the class:

- versions registered before the split load unchanged;
- versions registered now load with the code from before (a rolled-back deployment);
- the packages' modules can be reorganised again without breaking either: only the names the faces
  export are a contract.

``PICKLED`` lists the declared classes (the tests check that each resolves under its face).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

FORECASTING = "neuracrm_mlops.models.forecasting_model"
LEAD_SCORING = "neuracrm_mlops.models.lead_scoring_model"

PICKLED: list[type] = []

_C = TypeVar("_C", bound=type)


def pickled_as(module: str) -> Callable[[_C], _C]:
    """Class decorator (outermost, so that ``@dataclass`` runs with the defining module): pickles name
    the class under ``module``, which must export it."""

    def declare(cls: _C) -> _C:
        cls.__module__ = module
        PICKLED.append(cls)
        return cls

    return declare
