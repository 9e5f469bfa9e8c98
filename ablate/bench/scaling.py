"""Per-series summaries added to the rows: scaling exponents and ours / peer ratios.

* ``scaling_exponent``: least-squares slope of log(fwdbwd_ms) against log(length) over the
  series' ok rows (``scaling_exponent_fwd`` the same for fwd_ms); ``scaling_exponent_tail``
  the slope over its last three ok lengths, where fixed per-call overheads matter least. O(L)
  reads ~1, O(L log L) slightly above 1, O(L^2) ~2. NaN with fewer than two ok lengths. The
  same value is written on every row of the series (including its non-ok rows).
* ``ours_over_peer`` (on peer rows): our fastest ok mode of the point named in
  ``compare_to``, same batch and length, fwd+bwd time divided by the peer's (below 1: ours is
  faster); ``ours_best_mode`` names that mode; ``ours_over_peer_fwd`` the same for forward.
  For step rows: our step_ms / the peer's step_ms at the same batch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TAIL_POINTS = 3


def fit_exponent(lengths: np.ndarray | list, times: np.ndarray | list) -> float:
    """Slope of log(time) against log(length) by least squares; NaN with < 2 distinct lengths."""
    x, y = np.asarray(lengths, dtype=float), np.asarray(times, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = np.log(x[keep]), np.log(y[keep])
    if len(np.unique(x)) < 2:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def add_exponents(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with scaling_exponent, scaling_exponent_fwd, scaling_exponent_tail per series_id."""
    out = frame.copy()
    for col in ("scaling_exponent", "scaling_exponent_fwd", "scaling_exponent_tail"):
        out[col] = math.nan
    sweep = out[(out["kind"] == "sweep") & (out["status"] == "ok")]
    for series, rows in sweep.groupby("series_id"):
        rows = rows.sort_values("length")
        mask = out["series_id"] == series
        out.loc[mask, "scaling_exponent"] = fit_exponent(rows["length"], rows["fwdbwd_ms"])
        out.loc[mask, "scaling_exponent_fwd"] = fit_exponent(rows["length"], rows["fwd_ms"])
        tail = rows.tail(TAIL_POINTS)
        out.loc[mask, "scaling_exponent_tail"] = fit_exponent(tail["length"], tail["fwdbwd_ms"])
    return out


def add_peer_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with ours_over_peer, ours_over_peer_fwd and ours_best_mode on peer rows."""
    out = frame.copy()
    out["ours_over_peer"] = math.nan
    out["ours_over_peer_fwd"] = math.nan
    out["ours_best_mode"] = None
    ok = out["status"] == "ok"
    ours = out[ok & ~out["peer"].astype(bool)]
    for index, row in out[ok & out["peer"].astype(bool) & out["compare_to"].notna()].iterrows():
        same = ours[(ours["name"] == row["compare_to"]) & (ours["kind"] == row["kind"])
                    & (ours["batch"] == row["batch"])]
        if row["kind"] == "sweep":
            same = same[same["length"] == row["length"]]
            if same.empty or not same["fwdbwd_ms"].notna().any():
                continue
            best = same.loc[same["fwdbwd_ms"].idxmin()]
            out.at[index, "ours_over_peer"] = best["fwdbwd_ms"] / row["fwdbwd_ms"]
            out.at[index, "ours_over_peer_fwd"] = same["fwd_ms"].min() / row["fwd_ms"]
            out.at[index, "ours_best_mode"] = best["mode"]
        elif not same.empty and same["step_ms"].notna().any():
            out.at[index, "ours_over_peer"] = same["step_ms"].min() / row["step_ms"]
            out.at[index, "ours_best_mode"] = "step"
    return out
