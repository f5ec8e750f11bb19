"""densenas: neural architecture search for dense prediction inside OpenMMLab.

The core (this package) knows no task: tasks (``densenas.tasks.<name>``), search spaces
(``densenas.decoders``) and datasets (``densenas.datasets``) are plugins found through entry points
(:mod:`densenas.plugins`). ``decoders/``, ``tasks/`` and ``datasets/`` sit at the top of the repository and
install under the ``densenas.`` namespace (``setup.py``); the editable install (``tools/install.sh``) is the
one way a checkout is imported.
"""

__version__ = "0.1.0"
