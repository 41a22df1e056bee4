"""Evaluation: accuracy, AUC, randomized metrics, attacks, UAPs, ensembles, boundaries."""
