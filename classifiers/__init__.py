"""fastText classifiers: train, evaluate and apply quality, domain and language models.

``text`` (the one line normalisation), ``model`` (load by content hash, batched scores),
``train`` (deterministic training and held-out metrics), ``fit`` (the training subprocess),
``split`` (the id-hash held-out rule), ``card`` and ``registry`` (``DATA/models``),
``defaults`` (the bundled models), ``commands`` (``midmix classifiers``).
"""
