"""Evaluation metrics: DAVIS 2017 / MeViS J (region similarity) and F (boundary F-measure)."""

from .metrics import JFScore, boundary_f_measure, j_and_f, region_similarity

__all__ = ["JFScore", "boundary_f_measure", "j_and_f", "region_similarity"]
