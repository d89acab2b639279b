"""midmix: mid-training data from raw corpora to training phases.

This package holds the single ``midmix`` command and the few primitives every stage shares
(user-facing errors, content hashing, atomic publication of versions).
"""

__version__ = "0.1.0"
