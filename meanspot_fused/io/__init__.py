"""Edges of the pipeline: reading and writing files (frames, plots, model files)."""
