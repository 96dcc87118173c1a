"""Training: MEAN's protocol (``shared/design/TRAINING.md``) from feature files to trained, evaluated models.

* :mod:`.annotations`: the annotation CSV and the datasets' spreadsheets; MEAN's filtering rules.
* :mod:`.labels`: k_p, spotting pseudo-labels, recognition samples and labels.
* :mod:`.folds`: leave-one-subject-out folds, negative downsampling, :func:`plan_folds` (all of a run's folds).
* :mod:`.keras_semantics`: Keras's init, losses with L2, TF/Keras Adam, BatchNorm; one training step.
* :mod:`.loop`: :class:`Trainer`, the spot and recognition phases of each fold, its resumable state.
* :mod:`.evaluation`: MEAN's per-fold spotting, pooled counts, recognition analysis and STRS.
* :mod:`.export`: trained models as the project's checkpoint and Keras ``save_weights`` HDF5.
* :mod:`.run`: :func:`train_run`, a whole LOSO run into a run folder (``meanspot-fused train``).

Every MEAN bug of TRAINING.md section 9 is reproduced by default; :data:`FIXES` names the option that fixes
each one.
"""
from .annotations import GroundTruth, apply_mean_rules, read_training_csv
from .evaluation import MeanEvaluation
from .export import export_model, save_keras_weights
from .folds import FoldPlan, plan_folds
from .keras_semantics import KerasAdam, keras_init_, train_step
from .loop import Samples, TrainConfig, Trainer
from .run import FIXES, TrainSettings, train_run

__all__ = ["GroundTruth", "apply_mean_rules", "read_training_csv", "MeanEvaluation", "export_model",
           "save_keras_weights", "FoldPlan", "plan_folds", "KerasAdam", "keras_init_", "train_step", "Samples",
           "TrainConfig", "Trainer", "FIXES", "TrainSettings", "train_run"]
