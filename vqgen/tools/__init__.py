"""Everyday commands around the pipeline: reconstruct, interpolate, info, codebook, training curves.

Each module holds the work behind one ``vqgen`` command, as plain functions that return what
they computed (the CLI only prints it), so they can be called from Python too.
"""
