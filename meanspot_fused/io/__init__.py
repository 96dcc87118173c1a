"""The edges of the pipeline: files in and out; kernels never read files.

* :mod:`.keras`: Keras files (TF 2.x and Keras 3) to a ``MeanSpot`` (needs
  h5py, so it is imported only where used).
* :mod:`.checkpoints`: PyTorch ``MeanSpot`` checkpoints (``save_model``,
  ``load_model``, which also reads Keras files).
* :mod:`.feature_files`: feature files streamed in batches, score files written.
* :mod:`.atomic`: files that appear only when complete (temporary file beside, ``os.replace``).
* :mod:`.frames`: frames from videos, image folders and .npy stacks; face
  boxes (dlib or OpenCV's Haar cascade), 128x128 crops, landmarks.
* :mod:`.intervals`: ground-truth annotation CSVs in, ``intervals.csv`` out.
* :mod:`.spot_outputs`: the per-video output folder of ``spot`` (intervals,
  scores, plot, summary), complete or absent.
* :mod:`.plots`: the smoothed score curve with threshold and intervals (matplotlib).
* :mod:`.errors`: ``KerasFormatError`` and ``PredictError``.
"""
