"""densenas: neural architecture search for dense prediction (segmentation, detection, restoration)."""

__version__ = "0.1.0"
