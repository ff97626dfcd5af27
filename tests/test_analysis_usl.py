"""USL/Amdahl fits: agreement with the R package `usl`, recovery of known coefficients, poor-fit flags, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.analysis import fit_amdahl, fit_usl, usl_curve, usl_table
from runner.analysis.synthetic import Law, synthetic_metrics
from runner.analysis.usl import _batch_lm, _solve
from runner.cli import main
from runner.cli.fit import fit_csv
from runner.errors import DatasetError

DATA = Path(__file__).parent / "data" / "usl"


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_specsdm91_matches_r_usl():
    # Reference: R usl, tests/usl-nlxb.Rout.save and summary.Rout.save (see tests/data/usl/README.md).
    d = pd.read_csv(DATA / "specsdm91.csv")
    fit = fit_usl(d["load"], d["throughput"], bootstrap=200)
    assert rel(fit.sigma, 0.0277285) < 1e-4
    assert rel(fit.kappa, 0.0001044) < 1e-3  # R prints 4 significant digits
    assert rel(fit.gamma, 89.9952330) < 1e-5
    assert rel(fit.sigma_se, 0.0091217) < 1e-3
    assert rel(fit.kappa_se, 0.0000199) < 1e-2
    assert rel(fit.gamma_se, 14.2134894) < 1e-4
    assert rel(fit.r2, 0.9896) < 1e-4
    assert rel(fit.residual_se, 82.85) < 1e-3
    assert round(fit.peak_n, 0) == 97  # R: signif(peak.scalability(u), 2) == 97
    assert not fit.poor_fit
    assert fit.sigma_ci[0] < fit.sigma < fit.sigma_ci[1]
    assert fit.ci_method == "residuals"  # one value per load


def test_raytracer_matches_r_usl():
    # Reference: R usl, tests/confint.Rout.save: alpha 0.0578, beta 0.0000, gamma 21.8488 (vignette 0.057771, 21.848843).
    d = pd.read_csv(DATA / "raytracer.csv")
    fit = fit_usl(d["processors"], d["throughput"], bootstrap=0)
    assert rel(fit.sigma, 0.057771) < 1e-4
    assert fit.kappa == 0.0
    assert rel(fit.gamma, 21.848843) < 1e-6
    assert math.isinf(fit.peak_n)
    assert rel(fit.peak_x, 21.848843 / 0.057771) < 1e-4  # the ceiling gamma/sigma
    assert fit.bootstrap == 0 and math.isnan(fit.sigma_ci[0])


def test_recovers_known_coefficients_with_repetitions():
    rng = np.random.default_rng(7)
    n = np.repeat([1, 2, 4, 8, 16, 24, 32, 48, 64], 5).astype(float)
    x = usl_curve(n, 0.05, 0.0005, 100.0) * rng.lognormal(0, 0.02, n.size)
    fit = fit_usl(n, x, bootstrap=500, seed=1)
    assert fit.ci_method == "repetitions" and fit.bootstrap == 500
    assert fit.sigma_ci[0] <= 0.05 <= fit.sigma_ci[1]
    assert fit.kappa_ci[0] <= 0.0005 <= fit.kappa_ci[1]
    assert fit.gamma_ci[0] <= 100.0 <= fit.gamma_ci[1]
    true_peak = math.sqrt(0.95 / 0.0005)
    assert fit.peak_n_ci[0] <= true_peak <= fit.peak_n_ci[1]
    assert rel(fit.peak_n, true_peak) < 0.1
    assert not fit.poor_fit
    # the same seed gives the same intervals
    assert fit_usl(n, x, bootstrap=500, seed=1).sigma_ci == fit.sigma_ci


def test_batched_bootstrap_solver_agrees_with_scipy():
    rng = np.random.default_rng(3)
    n = np.repeat([1, 2, 4, 8, 16, 32], 3).astype(float)
    xb = usl_curve(n, 0.1, 0.001, 50.0) * rng.lognormal(0, 0.1, (8, n.size))
    p0 = _solve(n, xb.mean(axis=0), False)[0]
    batch, ok = _batch_lm(n, xb, p0, False)
    assert ok.all()
    for row, x in zip(batch, xb):
        ref = _solve(n, x, False)[0]
        fitted_batch, fitted_ref = usl_curve(n, *row), usl_curve(n, *ref)
        assert np.sum((fitted_batch - x) ** 2) <= np.sum((fitted_ref - x) ** 2) * (1 + 1e-6)


def test_amdahl_is_usl_without_coherency():
    n = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    x = usl_curve(n, 0.1, 0.0, 10.0)
    fit = fit_amdahl(n, x, bootstrap=100)
    assert fit.model == "amdahl" and fit.kappa == 0.0
    assert rel(fit.sigma, 0.1) < 1e-6 and rel(fit.gamma, 10.0) < 1e-6
    assert math.isinf(fit.peak_n) and rel(fit.peak_x, 100.0) < 1e-6
    assert math.isnan(fit.kappa_se)


def test_collapse_is_flagged_as_poor_fit():
    n = np.repeat([1, 2, 4, 8, 16, 32], 3).astype(float)
    x = np.where(n <= 8, 1e6 * n, 1e4)
    fit = fit_usl(n, x, bootstrap=50)
    assert fit.poor_fit and "not USL-shaped" in fit.reason


def test_too_few_loads():
    with pytest.raises(DatasetError, match="at least 2 distinct loads"):
        fit_usl([4, 4, 4], [1, 2, 3])
    fit = fit_usl([1, 2, 4], [1.0, 1.9, 3.5], bootstrap=0)
    assert fit.poor_fit and "needs at least 4" in fit.reason
    with pytest.raises(DatasetError, match="loads must be positive"):
        fit_usl([0, 1, 2], [1, 2, 3])


def test_usl_table_one_fit_per_slice():
    laws = {"a": Law(0.02, 0.0, 100.0), "b": Law(0.05, 0.001, 100.0)}
    m = synthetic_metrics(axes={"lock": ["a", "b"], "threads": [1, 2, 4, 8, 16, 32]}, law=lambda p: laws[p["lock"]],
                          noise=0.01, per_thread=True)
    table = usl_table(m, bootstrap=100)
    assert list(table["lock"]) == ["a", "b"]
    b = table.set_index("lock").loc["b"]
    assert rel(b["kappa"], 0.001) < 0.2 and b["axis"] == "threads"


def test_fit_cli(capsys):
    assert main(["fit", "usl", "--csv", str(DATA / "specsdm91.csv"), "--x", "load", "--y", "throughput",
                 "--json", "--bootstrap", "100"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert rel(doc["sigma"], 0.0277285) < 1e-4
    assert main(["fit", "amdahl", "--csv", str(DATA / "raytracer.csv"), "--x", "processors", "--y", "throughput"]) == 0
    assert "sigma (contention)" in capsys.readouterr().out
    assert main(["fit", "usl", "--csv", str(DATA / "raytracer.csv"), "--x", "cpus", "--y", "throughput"]) == 2
    assert "no column 'cpus'" in capsys.readouterr().err
    assert fit_csv(DATA / "raytracer.csv", "processors", "throughput", bootstrap=0).kappa == 0.0
