"""Classifiers: train, evaluate and apply quality, domain and language models.

``text`` (the one fastText line normalisation), ``model`` (fastText, loaded by content hash),
``domain_signals`` (structural signals of text), ``combiner`` (their sign-constrained learned
combination), ``stacked`` (fastText + signals, trained on out-of-source scores), ``transformer``
and ``transformer_train`` (Hugging Face sequence classifiers from local directories),
``loading`` (any kind from a path, cached by content hash), ``train`` (deterministic fastText
training and held-out metrics), ``evaluation`` (leave-source-out), ``fit`` (the training
subprocess), ``split`` (the id-hash held-out rule), ``card`` and ``registry`` (``DATA/models``),
``defaults`` (the bundled models), ``commands`` (``midmix classifiers``).
"""
