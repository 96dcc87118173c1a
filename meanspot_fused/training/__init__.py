"""Training: MEAN's protocol (``shared/design/TRAINING.md``) from feature files to trained models.

* :mod:`.annotations`: annotation rows and MEAN's filtering rules.
* :mod:`.labels`: k_p, spotting pseudo-labels, recognition samples and labels.
* :mod:`.folds`: leave-one-subject-out folds, negative downsampling.
* :mod:`.evaluation`: per-fold spotting and pooled MEAN-style metrics.
* :mod:`.keras_semantics`, :mod:`.loop`: Keras-exact initialisation, loss and
  Adam step, the spot and recognition phases.
* :mod:`.export`: trained models as checkpoints and Keras weight files.

The modules are imported by name; this package re-exports nothing yet.
"""
