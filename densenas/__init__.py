"""densenas: neural architecture search for dense prediction (segmentation, detection, restoration)."""
import os as _os

__version__ = "0.1.0"

# In a source checkout `decoders/`, `tasks/` and `datasets/` sit next to `densenas/` and are the
# `densenas.decoders`, `densenas.tasks` and `densenas.datasets` subpackages (a wheel puts them inside
# `densenas/`). Adding the checkout root to this package's search path makes the checkout importable as
# is, whichever copy an editable install last pointed at.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if all(_os.path.isfile(_os.path.join(_root, sub, "__init__.py")) for sub in ("decoders", "tasks", "datasets")):
    __path__.append(_root)  # type: ignore[name-defined]
