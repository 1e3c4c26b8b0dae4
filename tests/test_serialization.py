"""Saving and loading: safetensors format, integrity checks, exact resume in a fresh process."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn as fnn
from fastnn.io import CorruptFileError, read_safetensors, write_safetensors


def small_model(seed=0):
    model = fnn.Sequential([fnn.Dense(4, 16, activation="relu"), fnn.Dense(16, 3)], seed=seed)
    model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
    return model


def data(n=64):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)


def test_safetensors_roundtrip_and_compatibility(tmp_path):
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, 2], np.int64),
        "c": np.zeros((0,), np.float64),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, arrays, {"k": "v"})
    back, meta = read_safetensors(path)
    assert meta == {"k": "v"}
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and np.array_equal(back[name], arr)
    st = pytest.importorskip("safetensors.numpy")
    theirs = st.load_file(str(path))
    assert np.array_equal(theirs["a"], arrays["a"])
    st.save_file({"x": np.ones((2, 2), np.float32)}, str(tmp_path / "o.safetensors"))
    assert np.array_equal(read_safetensors(tmp_path / "o.safetensors", verify=False)[0]["x"], np.ones((2, 2)))


def test_model_roundtrip_predicts_the_same(tmp_path):
    X, y = data()
    model = small_model()
    model.fit(X, y, epochs=2, verbose=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = fnn.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.optimizer.step_count == model.optimizer.step_count
    assert loaded.epochs_done == 2 and type(loaded.optimizer).__name__ == "Adam"
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_damaged_or_foreign_files_are_refused(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    small_model().save(path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) - 40])
    elif damage == "flip":
        path.write_bytes(blob[:-5] + bytes([blob[-5] ^ 0xFF]) + blob[-4:])
    elif damage == "foreign":
        path.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 4)
    else:
        path.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="truncated|integrity|not a valid|not a safetensors|outside"):
        fnn.load(path)


def test_safetensors_of_another_program_is_refused_clearly(tmp_path):
    path = tmp_path / "other.safetensors"
    write_safetensors(path, {"w": np.ones(3, np.float32)}, {"format": "pt"})
    with pytest.raises(CorruptFileError, match="not a fastnn model"):
        fnn.load(path)


def test_a_weights_archive_given_to_load_names_load_weights(tmp_path):
    """fnn.load of a save_weights .npz used to report a 'header length 193340853072' of a
    truncated safetensors file; it now says what the file is and what reads it."""
    path = tmp_path / "w.npz"
    small_model().save_weights(path)
    with pytest.raises(
        CorruptFileError, match=r"it is a zip archive \(the .npz of model.save_weights\?\).*load_weights\(path\)"
    ):
        fnn.load(path)


def test_newer_format_version_says_so(tmp_path):
    path = tmp_path / "m.safetensors"
    small_model().save(path)
    tensors, meta = read_safetensors(path)
    meta["format_version"] = "99"
    write_safetensors(path, tensors, meta)
    with pytest.raises(ValueError, match="newer fastnn.*version 99"):
        fnn.load(path)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    model = small_model()
    model.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        small_model(seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_into_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        small_model().save(tmp_path / "nope" / "m.safetensors")


RESUME_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import fastnn as fnn
    path, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4)); y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)
    model = fnn.load(path)
    cbs = [fnn.callbacks.EarlyStopping(monitor="loss", patience=100, restore_best_weights=False)]
    model.fit(X, y, epochs=3, batch_size=16, callbacks=cbs, verbose=0)
    np.save(out, model.params)
    print(cbs[0].best, cbs[0].wait)
""")


def test_exact_resume_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)

    def fresh():
        model = fnn.Sequential([fnn.Dense(4, 16, activation="relu"), fnn.Dense(16, 3)], seed=7)
        model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
        return model

    straight = fresh()
    straight.fit(X, y, epochs=6, batch_size=16, verbose=0)
    first = fresh()
    cb = fnn.callbacks.EarlyStopping(monitor="loss", patience=100)
    first.fit(X, y, epochs=3, batch_size=16, callbacks=[cb], verbose=0)
    path = tmp_path / "half.safetensors"
    first.save(path)
    out = tmp_path / "params.npy"
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(out)], capture_output=True, text=True, check=True, env=env
    )
    resumed = np.load(out)
    assert np.array_equal(resumed, straight.params)  # bit-identical
    best, wait = result.stdout.split()
    assert float(best) <= cb.best  # the early-stopping state carried over


def test_resume_from_the_middle_of_an_epoch(tmp_path):
    X, y = data(96)
    straight = small_model()
    straight.fit(X, y, epochs=2, batch_size=8, verbose=0)

    class SaveAt(fnn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if self.model.epochs_done == 1 and batch == 4:
                self.model.save(tmp_path / "mid.safetensors")
                self.model.stop_training = True

    interrupted = small_model()
    interrupted.fit(X, y, epochs=2, batch_size=8, verbose=0, callbacks=[SaveAt()])
    resumed = fnn.load(tmp_path / "mid.safetensors")
    assert resumed.state.cursor.samples == 40
    hist = resumed.fit(X, y, epochs=1, batch_size=8, verbose=0)
    assert np.array_equal(resumed.params, straight.params)
    assert hist.epoch == [1]


class _TwiceMSE(fnn.losses.MSE):
    """A user's MSE, not registered: it inherits the name "mse"."""

    def forward_backward(self, out, target, grad=None, *args, **kwargs):
        return 2 * super().forward_backward(out, target, grad, *args, **kwargs)


class _OwnNamedSGD(fnn.optim.SGD):
    """A user's SGD with a name of its own, not registered."""

    name = "own_named_sgd"


def test_save_warns_when_the_file_cannot_name_the_users_loss_or_optimizer(tmp_path):
    """A file holds a loss's and an optimizer's name only: fnn.load silently rebuilt fastnn's MSE for
    a user's unregistered subclass of it (same name); save now says so, and how to register it."""
    model = fnn.Sequential([fnn.Dense(3, 2)], seed=0).compile(_TwiceMSE(), "sgd")
    with pytest.warns(UserWarning, match=r"loss _TwiceMSE is not registered under its name 'mse'.*rebuild MSE"):
        model.save(tmp_path / "loss.safetensors")
    model.compile("mse", _OwnNamedSGD(lr=0.1))
    with pytest.warns(UserWarning, match=r"optimizer _OwnNamedSGD.*refuse the file.*register_optimizer"):
        model.save(tmp_path / "optimizer.safetensors")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_model().save(tmp_path / "plain.safetensors")  # fastnn's own classes: no warning


def test_a_malformed_model_config_gets_an_error_naming_what_is_wrong():
    """Sequential.from_config raised a bare KeyError('class') / KeyError('layers') or an
    iteration TypeError for hand-made configs."""
    with pytest.raises(ValueError, match="'layers' list"):
        fnn.Sequential.from_config({})
    with pytest.raises(ValueError, match="'layers' list"):
        fnn.Sequential.from_config({"layers": 3})
    with pytest.raises(ValueError, match="a layer config must be a dict"):
        fnn.Sequential.from_config({"layers": [{"config": {}}]})
    with pytest.raises(TypeError, match=r"\{'bogus': 1\} does not make a Dense"):
        fnn.Sequential.from_config({"layers": [{"class": "Dense", "config": {"bogus": 1}}]})
    model = fnn.Sequential.from_config(
        {"layers": [{"class": "Dense", "config": {"in_features": 2, "out_features": 3}}]}
    )
    assert model.dtype == np.float32 and model.seed == 0 and model.output_shape == (3,)
