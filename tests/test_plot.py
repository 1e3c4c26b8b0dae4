"""fastnn.plot with the Agg backend: figures are written and show the data."""

import sys

import numpy as np
import pytest

import fastnn as fnn

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image
from matplotlib.figure import Figure

from fastnn import plot as P


@pytest.fixture(scope="module")
def moons_model():
    X, y = fnn.data.make_moons(128, noise=0.1, seed=0)
    model = fnn.Sequential(
        [fnn.Dense(2, 16, activation="relu"), fnn.Dense(16, 16, activation="tanh"), fnn.Dense(16, 2)], seed=0
    )
    history = model.fit(
        X,
        y,
        loss="cross_entropy",
        optimizer=fnn.optim.Adam(lr=3e-2),
        epochs=30,
        batch_size=32,
        validation_data=(X, y),
        verbose=0,
    )
    return model, history, X, y


def written(path):
    assert path.exists() and path.stat().st_size > 2000
    image = matplotlib.image.imread(path)
    assert image.std() > 0.01  # not a blank canvas
    return image


def test_plot_history_lines_hold_the_history(moons_model, tmp_path):
    _, history, _, _ = moons_model
    fig = P.plot_history(history, path=tmp_path / "h.png")
    assert isinstance(fig, Figure)
    written(tmp_path / "h.png")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"loss", "accuracy", "lr"}
    lines = {line.get_label(): line for line in panels["loss"].get_lines()}
    np.testing.assert_allclose(lines["loss"].get_ydata(), history["loss"])
    np.testing.assert_allclose(lines["val_loss"].get_ydata(), history["val_loss"])
    np.testing.assert_array_equal(lines["loss"].get_xdata(), np.arange(1, 31))
    assert panels["lr"].get_yscale() == "log"
    with pytest.raises(ValueError, match="Did you mean 'loss'"):
        P.plot_history(history, metrics=["los"])


def test_plot_history_of_a_continued_fit_is_drawn_at_its_epochs():
    X, y = fnn.data.make_xor(16, noise=0.1, seed=0)
    model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=3, batch_size=8, verbose=0)
    history = model.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y), verbose=0)
    assert history.epoch == [3, 4]
    (ax,) = P.plot_history(history, metrics=["loss"]).axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["loss"].get_xdata(), [4, 5])  # the 4th and 5th epochs
    np.testing.assert_array_equal(lines["val_loss"].get_xdata(), [4, 5])
    np.testing.assert_allclose(lines["loss"].get_ydata(), history["loss"])


def test_plot_history_names_a_validation_curve_of_another_length():
    with pytest.raises(ValueError, match=r"val_loss has 1 values but loss has 2"):
        P.plot_history({"loss": [1.0, 0.5], "val_loss": [1.1]})


def test_activation_histograms_count_every_output(moons_model, tmp_path):
    model, _, X, _ = moons_model
    fig = P.plot_activation_histograms(model, X, bins=20, path=tmp_path / "a.png")
    written(tmp_path / "a.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    outputs = fnn.diagnostics.activations(model, X)
    for ax, out in zip(visible, outputs):
        heights = [patch.get_height() for patch in ax.patches]
        assert len(heights) == 20 and sum(heights) == out.size
    assert "dead" in visible[0].get_title() and "saturated" in visible[1].get_title()


def test_gradient_histograms_one_per_weight_matrix(moons_model, tmp_path):
    model, _, X, y = moons_model
    fig = P.plot_gradient_histograms(model, X, y, bins=10, path=tmp_path / "g.png")
    written(tmp_path / "g.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["0.weight gradient", "1.weight gradient", "2.weight gradient"]
    assert sum(p.get_height() for p in visible[1].patches) == 16 * 16


def test_gradient_norms_across_depth(moons_model, tmp_path):
    model, _, X, y = moons_model
    other = fnn.Sequential(
        [fnn.Dense(2, 16, activation="sigmoid"), fnn.Dense(16, 16, activation="sigmoid"), fnn.Dense(16, 2)], seed=1
    )
    other.compile("cross_entropy", "sgd")
    fig = P.plot_gradient_norms([model, other], X, y, labels=["relu", "sigmoid"], path=tmp_path / "n.png")
    written(tmp_path / "n.png")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["relu", "sigmoid"]
    np.testing.assert_allclose(lines[0].get_ydata(), fnn.diagnostics.layer_gradient_norms(model, X, y))
    assert fig.axes[0].get_yscale() == "log"


def test_decision_boundary_image_shows_both_classes(moons_model, tmp_path):
    model, _, X, y = moons_model
    fig = P.plot_decision_boundary(model, X, y, resolution=60, path=tmp_path / "d.png")
    written(tmp_path / "d.png")
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (60, 60) and set(np.unique(image)) == {0, 1}
    np.testing.assert_allclose(ax.collections[0].get_offsets(), X)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        P.plot_decision_boundary(model, np.ones((4, 3)), np.zeros(4))


def test_lr_range_plot(moons_model, tmp_path):
    model, _, X, y = moons_model
    result = fnn.diagnostics.lr_range_test(model, X, y, start=1e-4, end=10.0, steps=30)
    fig = P.plot_lr_range(result, path=tmp_path / "lr.png")
    written(tmp_path / "lr.png")
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), result.losses)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"fastnn\[plot\]"):
        P.plot_history({"loss": [1.0, 0.5]})
