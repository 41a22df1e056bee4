"""Theorem 1 (Shah et al. 2020, Sec. 4.1, App. F): numerical verification on LSN.

A one-hidden-layer ReLU network ``f(x) = sum_j v_j ReLU(w_j . x)`` with a fixed, balanced second
layer ``v_j = +-1/sqrt(k)``, trained by GD with hinge loss on fresh LSN batches, puts weight
``~ t eta / (2 sqrt k)`` on the linear coordinate and only ``O(1/sqrt(dk))`` on the 3-slab one.
This package simulates that procedure and checks the theorem, its proof's lemmas and THEORY.md's
derivation numerically:

* `theory.setting`   LSN sampler, network, init, losses, stopping times, `SimConfig`;
* `theory.lemmas`    closed-form population gradients (Lemmas 4-6), finite-sample bounds and the
                     population simulator on per-unit ``(w1, w2, ||w_bar||)`` (float64, d to 1e8+);
* `theory.empirical` the empirical simulator, vmapped over seeds: literal ("full") and
                     exact-in-law reduced ("projected") batch samplers, test metrics;
* `theory.fits`      log-log least squares with standard errors and 95 % intervals (numpy only);
* `theory.grids`     THEORY.md's grids G1-G7 plus lemma (L) and sampler (M) checks, presets;
* `theory.claims`    claims with bands and PASS / INCONCLUSIVE / FAIL verdicts (a fitted slope
                     passes only if its 95 % interval lies inside the band);
* `theory.report`    logs, figures, report.md; ``python -m theory.report --rejudge DIR`` re-judges
                     a saved run from its summary.json;
* `theory.theorem1`  the command line: ``python -m theory.theorem1 --preset quick --out DIR``.

Importing this package does not enable JAX's x64 mode; the population code runs inside
``jax.enable_x64(True)`` where it needs float64.
"""
