"""Theorem 1 (Shah et al. 2020, Sec. 4.1, App. F): numerical verification on LSN."""
