"""What runs a stage over many videos: :mod:`.manifest` (inputs, run keys, the skip rule, the manifest),
:mod:`.local` (this process or a pool of worker processes)."""
from .local import run_corpus
from .manifest import Manifest, expand_inputs

__all__ = ["run_corpus", "expand_inputs", "Manifest"]
