"""The shared figure helpers draw what they say (checked against numpy on the drawn artists)."""

import numpy as np

from lsb_jax import plots


def _spy(ax):
    """Records the (lower, upper) edges `band` hands to `ax.fill_between`."""
    calls, draw = [], ax.fill_between
    ax.fill_between = lambda x, lo, hi, **kw: calls.append((np.asarray(lo), np.asarray(hi))) or draw(x, lo, hi, **kw)
    return calls


def test_linear_band_is_mean_plus_minus_sample_std_and_clips_to_bounds():
    rng = np.random.default_rng(0)
    steps, v = np.arange(5.0), rng.uniform(0.5, 1.0, (5, 7))
    fig, (ax,) = plots.figure(1)
    calls = _spy(ax)
    plots.band(ax, steps, v, label="a", bounds=(0.0, 1.0))
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), v.mean(1))
    ((lo, hi),) = calls
    np.testing.assert_allclose(lo, np.clip(v.mean(1) - v.std(1, ddof=1), 0, 1))
    np.testing.assert_allclose(hi, np.clip(v.mean(1) + v.std(1, ddof=1), 0, 1))
    assert hi.max() <= 1.0 and fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"


def test_log_band_is_median_and_quartiles_without_minor_labels():
    rng = np.random.default_rng(1)
    steps, v = np.arange(6.0), np.exp(rng.normal(0, 2, (6, 9)))
    _, (ax,) = plots.figure(1)
    calls = _spy(ax)
    plots.band(ax, steps, v, log=True)
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), np.median(v, 1))
    ((lo, hi),) = calls
    np.testing.assert_allclose(lo, np.quantile(v, 0.25, axis=1))
    np.testing.assert_allclose(hi, np.quantile(v, 0.75, axis=1))
    assert ax.get_yscale() == "log" and lo.min() > 0
    assert isinstance(ax.yaxis.get_minor_formatter(), plots.plt.NullFormatter)


def test_band_draws_empty_and_all_nan_series_without_warnings():
    import warnings

    from lsb_jax import analysis

    fig, (ax,) = plots.figure(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.band(ax, np.zeros(0), np.zeros((0, 3)))                   # nothing logged yet
        plots.band(ax, np.arange(3.0), np.full((3, 2), np.nan))         # every member diverged
        plots.band(ax, np.arange(3.0), np.full((3, 2), np.nan), log=True)
    assert all(np.isnan(line.get_ydata()).all() for line in ax.lines[1:]) and len(ax.lines[0].get_ydata()) == 0
    assert np.isnan(analysis.steps_to_threshold(np.zeros(0), np.zeros((0, 4)), 0.5)).tolist() == [True] * 4
    try:
        analysis.censored_summary([np.nan, 200.0], 100)
        raise AssertionError("a time past the horizon must be refused")
    except ValueError as e:
        assert str(e).endswith("horizon 100: 200.0")
