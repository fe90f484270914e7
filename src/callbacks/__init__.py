"""The project's Lightning callbacks (enabled through configs/callbacks/): `Visuals` draws predictions, the
confusion matrix and attention maps for any logger; `RunIdentity` keeps a W&B run's identity across resumes."""

from src.callbacks.run_identity import RunIdentity
from src.callbacks.visuals import Visuals

__all__ = ["RunIdentity", "Visuals"]
