"""Paired per-seed comparisons of two runs of a benchmark grid: the evidence behind a claim.

A grid file may list the claims its write-up makes, each as a comparison of two of its runs on
one metric::

    claims:
      - {claim: "AdaFTR raises CVR AUC on MMoE", run: "MMoE + AdaFTR", base: MMoE,
         metric: cvr.auc}

Every run of a grid trains once per seed on the same data, so the runs are paired by seed: the
evidence is the per-seed difference ``run - base``. For ``n`` seeds this module reports the
differences, their mean, a two-sided 95% Student-t interval of the mean
(``mean +- t_{0.975, n-1} s / sqrt(n)``, ``s`` the sample std), the sign count and an exact
two-sided sign test (ties dropped), and a verdict read from the interval: ``higher`` or
``lower`` when it excludes 0, else ``no difference shown``. With fewer than 2 finite
differences there is no interval and the verdict says so.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

from scipy import stats

from schemas.config import ConfigError

KEYS = ("claim", "run", "base", "metric")


def check_claims(path: str, claims: Any, labels: Sequence[str],
                 metrics: Sequence[str]) -> None:
    """Checks a grid's ``claims`` before anything trains.

    Raises:
      ConfigError: Naming ``path``, the claim's index and what is wrong (missing or unknown
        keys, a run label or metric the grid does not have).
    """
    if not isinstance(claims, list):
        raise ConfigError(f"{path}: claims must be a list of mappings with keys {list(KEYS)}, "
                          f"got {claims!r}")
    for i, claim in enumerate(claims):
        if not isinstance(claim, dict) or set(claim) != set(KEYS):
            raise ConfigError(f"{path}: claims[{i}] needs exactly the keys {list(KEYS)}, got "
                              f"{claim!r}")
        for key in ("run", "base"):
            if claim[key] not in labels:
                raise ConfigError(f"{path}: claims[{i}].{key} = {claim[key]!r} is not a run of "
                                  f"the grid; runs are {list(labels)}")
        if claim["run"] == claim["base"]:
            raise ConfigError(f"{path}: claims[{i}] compares run {claim['run']!r} with itself")
        if claim["metric"] not in metrics:
            raise ConfigError(f"{path}: claims[{i}].metric = {claim['metric']!r} is not one of "
                              f"the grid's metrics {list(metrics)}")


def paired_difference(run_values: Sequence[float], base_values: Sequence[float],
                      confidence: float = 0.95) -> Dict[str, Any]:
    """Statistics of the per-seed differences ``run - base`` (seeds in the same order).

    Seeds where either value is NaN are left out of everything but ``differences``.

    Returns:
      ``{"differences", "n", "mean", "ci_low", "ci_high", "positive", "negative",
      "sign_p", "verdict"}``; ``ci_*`` are NaN and ``verdict`` is ``"fewer than 2 seeds"``
      with under 2 finite differences.
    """
    if len(run_values) != len(base_values):
        raise ValueError(f"paired_difference: {len(run_values)} run values against "
                         f"{len(base_values)} base values; the runs must share their seeds")
    diffs = [float(a) - float(b) for a, b in zip(run_values, base_values)]
    finite = [d for d in diffs if not math.isnan(d)]
    n = len(finite)
    positive = sum(d > 0 for d in finite)
    negative = sum(d < 0 for d in finite)
    out: Dict[str, Any] = {"differences": diffs, "n": n, "positive": positive,
                           "negative": negative}
    nonzero = positive + negative
    out["sign_p"] = (float(stats.binomtest(positive, nonzero, 0.5).pvalue) if nonzero
                     else float("nan"))
    mean = sum(finite) / n if n else float("nan")
    if n < 2:
        return {**out, "mean": mean, "ci_low": float("nan"), "ci_high": float("nan"),
                "verdict": "fewer than 2 seeds"}
    sd = math.sqrt(sum((d - mean) ** 2 for d in finite) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "higher" if low > 0 else "lower" if high < 0 else "no difference shown"
    return {**out, "mean": mean, "ci_low": low, "ci_high": high, "verdict": verdict}


def evaluate(results: Mapping[str, Any], claims: Sequence[Mapping[str, str]]
             ) -> List[Dict[str, Any]]:
    """Each claim of a grid's ``results`` (``run_grid``'s dict) with its paired statistics.

    Claims naming a run that ``results`` does not hold (a ``--runs`` subset) are skipped.
    """
    by_label = {run["label"]: run for run in results["runs"]}
    out = []
    for claim in claims:
        if claim["run"] not in by_label or claim["base"] not in by_label:
            continue
        values = [by_label[claim[key]]["metrics"][claim["metric"]]["values"]
                  for key in ("run", "base")]
        out.append({**claim, **paired_difference(*values)})
    return out


def _fmt(value: float) -> str:
    """Signed, 4 decimals; differences too small for them (under 1e-4) in scientific form."""
    if math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if value == 0 or abs(value) >= 1e-4 else f"{value:+.1e}"


def markdown(evaluated: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> str:
    """The claims as a Markdown table (empty string without claims)."""
    if not evaluated:
        return ""
    lines = ["| claim | metric | run - base per seed | mean | 95% CI | sign (+/-) | verdict |",
             "|---|---|---|---:|---|---|---|"]
    for c in evaluated:
        diffs = ", ".join(_fmt(d) for d in c["differences"])
        ci = ("n/a" if math.isnan(c["ci_low"])
              else f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]")
        sign = f"{c['positive']}/{c['negative']}" + (
            "" if math.isnan(c["sign_p"]) else f" (p {c['sign_p']:.2f})")
        lines.append(f"| {c['claim']} ({c['run']} vs {c['base']}) | {c['metric']} | {diffs} | "
                     f"{_fmt(c['mean'])} | {ci} | {sign} | {c['verdict']} |")
    lines.append(f"\npaired by train seed {list(seeds)}; 95% CI: Student t over the per-seed "
                 f"differences; sign test two-sided, exact")
    return "\n".join(lines)
