"""Tests of fastnn.data: generators, digits, IDX/CSV/NPZ files, load_file, splitting, standardising."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from fastnn import data

GENERATORS = {
    "xor": (data.make_xor, {"n_samples": 101, "noise": 0.1}, 2),
    "spirals": (data.make_spirals, {"n_samples": 151, "n_classes": 3}, 3),
    "moons": (data.make_moons, {"n_samples": 101}, 2),
}


# --------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_shapes_dtypes_balance(name):
    make, kwargs, k = GENERATORS[name]
    X, y = make(**kwargs)
    n = kwargs["n_samples"]
    assert X.shape == (n, 2) and X.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k and counts.max() - counts.min() <= 1
    assert np.isfinite(X).all()


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_seeded(name):
    make, kwargs, _ = GENERATORS[name]
    X1, y1 = make(**kwargs, seed=3)
    X2, y2 = make(**kwargs, seed=3)
    X3, _ = make(**kwargs, seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    X4, _y4 = make(**kwargs, seed=np.random.default_rng(3))
    assert X4.shape == X1.shape


def test_xor_classic_truth_table():
    X, y = data.make_xor(4)
    np.testing.assert_array_equal(X, [[-1, -1], [-1, 1], [1, -1], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])


def test_xor_labels_are_xor_of_signs():
    X, y = data.make_xor(400, noise=0.0, seed=1)
    assert set(np.unique(np.abs(X))) == {1.0}
    np.testing.assert_array_equal(y, ((X[:, 0] > 0) != (X[:, 1] > 0)).astype(np.int64))
    Xn, yn = data.make_xor(400, noise=0.2, seed=1)
    # small noise: signs unchanged, labels still the XOR of the signs
    np.testing.assert_array_equal(yn, ((Xn[:, 0] > 0) != (Xn[:, 1] > 0)).astype(np.int64))


def test_moons_geometry():
    X, y = data.make_moons(200, noise=0.0)
    assert set(np.unique(y)) == {0, 1}
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0)
    assert upper[:, 1].min() >= -1e-12 and lower[:, 1].max() <= 0.5 + 1e-12


def test_spirals_radius_and_classes():
    X, y = data.make_spirals(300, n_classes=4, noise=0.0, shuffle=False)
    np.testing.assert_array_equal(np.bincount(y), [75] * 4)
    r = np.hypot(X[:, 0], X[:, 1])
    assert r.max() <= 1.0 + 1e-12
    np.testing.assert_allclose(r[:75], np.linspace(0, 1, 75))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"n_samples": 2.5}, TypeError, "n_samples"),
        ({"n_samples": True}, TypeError, "n_samples"),
        ({"noise": -1.0}, ValueError, "noise"),
        ({"noise": float("nan")}, ValueError, "noise"),
        ({"noise": "big"}, TypeError, "noise"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_generator_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        data.make_xor(**kwargs)


def test_spirals_and_moons_bad_arguments():
    with pytest.raises(ValueError, match="n_samples"):
        data.make_spirals(n_samples=2, n_classes=3)
    with pytest.raises(ValueError, match="n_classes"):
        data.make_spirals(n_classes=0)
    with pytest.raises(ValueError, match="n_samples"):
        data.make_moons(n_samples=1)


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    bunch = data.load_digits(return_X_y=False)
    assert bunch["images"].shape == (1797, 8, 8)
    np.testing.assert_array_equal(bunch["data"], X)


def test_load_digits_images_for_convolutions():
    pytest.importorskip("sklearn")
    flat, y = data.load_digits()
    X, y2 = data.load_digits(images=True)
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float64
    np.testing.assert_array_equal(X.reshape(1797, 64), flat)  # the same scaling, channels first
    np.testing.assert_array_equal(y2, y)
    bunch = data.load_digits(return_X_y=False, images=True)
    assert bunch["data"].shape == (1797, 1, 8, 8) and bunch["images"].shape == (1797, 8, 8)
    with pytest.raises(TypeError, match="images must be True or False"):
        data.load_digits(images="yes")


def test_load_file_keeps_image_shapes(tmp_path):
    images = _sample(np.uint8, (6, 5, 4))
    data.write_idx(tmp_path / "img.idx", images)
    data.write_idx(tmp_path / "lab.idx", np.arange(6, dtype=np.uint8))
    X, y = data.load_file(tmp_path / "img.idx", target=tmp_path / "lab.idx", images=True)
    assert X.shape == (6, 1, 5, 4) and X.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(X[:, 0], images)
    assert data.load_file(tmp_path / "img.idx")[0].shape == (6, 20)  # flat by default
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 2, 4, 4), np.float32), y=np.arange(3))
    X, _ = data.load_file(tmp_path / "d.npz", images=True)
    assert X.shape == (3, 2, 4, 4) and X.dtype == np.float32
    np.savez(tmp_path / "flat.npz", X=np.zeros((3, 7)), y=np.arange(3))
    assert data.load_file(tmp_path / "flat.npz", images=True)[0].shape == (3, 7)


def test_load_digits_without_sklearn(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"fastnn\[datasets\]"):
        data.load_digits()


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _sample(dtype, shape):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", IDX_DTYPES, ids=lambda d: np.dtype(d).name)
def test_idx_round_trip(tmp_path, dtype, gz):
    for shape in [(7,), (5, 3), (4, 3, 2), (2, 1, 3, 2)]:
        a = _sample(dtype, shape)
        path = tmp_path / f"a{len(shape)}.idx{'.gz' if gz else ''}"
        data.write_idx(path, a)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
        b = data.read_idx(path)
        assert b.dtype == np.dtype(dtype) and b.shape == shape and b.dtype.isnative
        assert b.flags.writeable
        np.testing.assert_array_equal(a, b)


def test_idx_mnist_like_images_and_labels(tmp_path):
    images = _sample(np.uint8, (10, 28, 28))
    labels = np.arange(10, dtype=np.uint8)
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    raw = (tmp_path / "train-labels-idx1-ubyte").read_bytes()
    assert raw[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 10])  # the MNIST header
    np.testing.assert_array_equal(data.read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "train-labels-idx1-ubyte")), labels)


def test_idx_gzip_detected_by_magic_not_extension(tmp_path):
    a = _sample(np.int16, (3, 4))
    data.write_idx(tmp_path / "a.idx.gz", a)
    plain_name = tmp_path / "a.idx"
    plain_name.write_bytes((tmp_path / "a.idx.gz").read_bytes())
    np.testing.assert_array_equal(data.read_idx(plain_name), a)
    # an uncompressed file named .gz reads too
    data.write_idx(tmp_path / "b.idx", a)
    (tmp_path / "b.gz").write_bytes((tmp_path / "b.idx").read_bytes())
    np.testing.assert_array_equal(data.read_idx(tmp_path / "b.gz"), a)


@pytest.mark.parametrize(
    "cut, match",
    [
        (2, "magic"),
        (6, "header"),
        (-1, "truncated"),
    ],
)
def test_idx_truncated(tmp_path, cut, match):
    data.write_idx(tmp_path / "full.idx", _sample(np.float32, (3, 4)))
    raw = (tmp_path / "full.idx").read_bytes()
    bad = tmp_path / "bad.idx"
    bad.write_bytes(raw[:cut])
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(bad)
    assert "bad.idx" in str(info.value)


def test_idx_corrupt(tmp_path):
    data.write_idx(tmp_path / "a.idx", _sample(np.uint8, (3, 4)))
    raw = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "long.idx").write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="trailing"):
        data.read_idx(tmp_path / "long.idx")
    (tmp_path / "type.idx").write_bytes(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "type.idx")
    gz = gzip.compress(raw)
    (tmp_path / "cut.idx.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match="cut.idx.gz"):
        data.read_idx(tmp_path / "cut.idx.gz")


def test_write_idx_bad_dtype(tmp_path):
    with pytest.raises(TypeError, match="astype"):
        data.write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="path"):
        data.write_idx(3, np.zeros(3, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def test_csv_header_named_target(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a, b ,label,c\n1,2,0,3\n4.5,-5,1,6e1\n\n7,8,2,9\n")
    X, y = data.read_csv(p, target="label")
    np.testing.assert_array_equal(X, [[1, 2, 3], [4.5, -5, 60], [7, 8, 9]])
    assert X.dtype == np.float64
    np.testing.assert_array_equal(y, [0, 1, 2])
    assert y.dtype == np.int64
    X2, y2 = data.read_csv(p)
    assert X2.shape == (3, 4) and y2 is None


def test_csv_no_header_index_target(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("1,2,0.5\n3,4,1.5\n")
    X, y = data.read_csv(p, target=-1)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0.5, 1.5])
    assert y.dtype == np.float64  # non-integer targets stay float (regression)
    _X0, y0 = data.read_csv(p, target=0)
    np.testing.assert_array_equal(y0, [1, 3])
    assert y0.dtype == np.int64
    with pytest.raises(ValueError, match="no header"):
        data.read_csv(p, target="label")


def test_csv_index_given_as_text_for_command_lines(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("0,2,0.5\n1,4,1.5\n")  # a "0" cell in the first row does not make it a header
    for text, column in (("0", 0), ("-1", 2), (" +1 ", 1)):
        X, y = data.read_csv(p, target=text)
        np.testing.assert_array_equal(y, np.loadtxt(p, delimiter=",")[:, column])
        assert X.shape == (2, 2)
    with pytest.raises(ValueError, match="target=3 is out of range.*3 columns"):
        data.read_csv(p, target="3")
    named = tmp_path / "n.csv"
    named.write_text("x,2021,label\n1,5,0\n2,6,1\n")  # a column named like an index: the name wins
    np.testing.assert_array_equal(data.read_csv(named, target="2021")[1], [5, 6])


def test_load_file_header_flag_and_directories(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("10,20,1\n1,2,0\n")
    X, y = data.load_file(p, target="-1", header=False)
    assert X.shape == (2, 2) and list(y) == [1, 0]
    assert data.load_file(p, target=-1, header=True)[0].shape == (1, 2)
    np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match="header=False applies to CSV/TSV files only"):
        data.load_file(tmp_path / "d.npz", header=False)
    for reader in (data.load_file, data.read_csv, data.read_idx, data.read_npz):
        with pytest.raises(IsADirectoryError, match="is a directory, not a data file"):
            reader(tmp_path)


def test_csv_string_labels_and_tsv(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("x\ty\tspecies\n1\t2\tversicolor\n3\t4\tsetosa\n5\t6\tversicolor\n")
    X, y, classes = data.read_csv(p, target="species", delimiter="\t", return_classes=True)
    np.testing.assert_array_equal(classes, ["setosa", "versicolor"])
    np.testing.assert_array_equal(y, [1, 0, 1])
    assert y.dtype == np.int64 and X.shape == (3, 2)
    # string labels and no header: the first row is data
    q = tmp_path / "e.csv"
    q.write_text("1,2,cat\n3,4,dog\n")
    X, y = data.read_csv(q, target=2)
    np.testing.assert_array_equal(y, [0, 1])
    assert X.shape == (2, 2)


def test_csv_explicit_header_flag(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("10,20\n1,2\n")
    assert data.read_csv(p, header=True)[0].shape == (1, 2)
    assert data.read_csv(p, header=False)[0].shape == (2, 2)
    assert data.read_csv(p)[0].shape == (2, 2)


def test_csv_quotes_gzip_and_ragged_rows(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('a,b,t\n1,2,x\n\n3,4,"y,z"\n')
    X, y, classes = data.read_csv(p, target="t", return_classes=True)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(classes, ["x", "y,z"])
    np.testing.assert_array_equal(y, [0, 1])
    g = tmp_path / "g.csv.gz"
    g.write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n"))
    np.testing.assert_array_equal(data.read_csv(g)[0], [[1, 2], [3, 4]])
    for text in ["a,b,t\n1,2,x\n3,4,y,5\n", "a,b,t\n1,2,0\n3,4,1,5\n", "a,b,t\n1,2,x\n3,4\n"]:
        (tmp_path / "r.csv").write_text(text)
        with pytest.raises(ValueError, match="line 3"):
            data.read_csv(tmp_path / "r.csv", target="t")


def test_csv_missing_value_and_wrong_delimiter_are_named(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"line 2, column 1 \('b'\): the cell is empty \(a missing value\)"):
        data.read_csv(p, target="label")
    q = tmp_path / "s.csv"
    q.write_text("a;b;label\n1;2;0\n3;4;1\n")
    for target in ("label", -1):
        with pytest.raises(ValueError, match="single column with delimiter ','.*is the delimiter right"):
            data.read_csv(q, target=target)


def test_load_file_guesses_a_semicolon_or_tab_delimiter(tmp_path):
    for delimiter in (";", "\t", "|"):
        p = tmp_path / "d.csv"
        rows = [["a", "b", "label"], ["1.5", "2", "0"], ["3", "4", "1"]]
        p.write_text("".join(delimiter.join(row) + "\n" for row in rows))
        X, y = data.load_file(p, target="label")
        np.testing.assert_array_equal(X, [[1.5, 2], [3, 4]])
        np.testing.assert_array_equal(y, [0, 1])
    decimal_commas = tmp_path / "e.csv"  # split at the semicolons, the decimal comma named
    decimal_commas.write_text("a;b;label\n1,5;2;0\n3;4;1\n")
    with pytest.raises(ValueError, match=r"line 2, column 0 \('a'\): '1,5' is not a number"):
        data.load_file(decimal_commas, target="label")
    commas = tmp_path / "f.csv"  # a comma in the first line: the comma stays the delimiter
    commas.write_text("a,b;c,label\n1,2,0\n3,4,1\n")
    assert data.load_file(commas, target="label")[0].shape == (2, 2)
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="CSV/TSV files only"):
        data.load_file(tmp_path / "d.npz", delimiter=";")


def test_csv_header_inferred_from_target_name(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,species\n1,cat\n2,dog\n")  # no numeric column under a name: the name decides
    X, y = data.read_csv(p, target="species")
    np.testing.assert_array_equal(X, [[1], [2]])
    np.testing.assert_array_equal(y, [0, 1])


def test_csv_slow_path_agrees(tmp_path):
    # cells NumPy's C parser refuses (underscores, a whitespace-only line) go through the csv module
    p = tmp_path / "d.csv"
    p.write_text("x,y,t\n1_000,2,a\n   \n3,4.5,b\n")
    X, y = data.read_csv(p, target="t")
    np.testing.assert_array_equal(X, [[1000, 2], [3, 4.5]])
    np.testing.assert_array_equal(y, [0, 1])


def test_csv_bad_cells(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(ValueError, match=r"line 3, column 1 \('b'\): 'oops'"):
        data.read_csv(p, target="label")
    q = tmp_path / "e.csv"
    q.write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="line 2"):
        data.read_csv(q)
    with pytest.raises(ValueError, match="did you mean 'label'"):
        data.read_csv(p, target="lable")
    with pytest.raises(ValueError, match="out of range"):
        data.read_csv(p, target=3)
    with pytest.raises(TypeError, match="target"):
        data.read_csv(p, target=1.0)
    with pytest.raises(ValueError, match="header"):
        data.read_csv(p, header="yes")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        data.read_csv(tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text("1,2\n3,\n")
    with pytest.raises(ValueError, match="target cell is empty"):
        data.read_csv(tmp_path / "blank.csv", target=1)


# --------------------------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------------------------


def test_npz_round_trip_and_keys(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", X=X, y=y, extra=np.zeros(2))
    X2, y2 = data.read_npz(tmp_path / "d.npz")
    assert X2.dtype == np.float32
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    Xe, ye = data.read_npz(tmp_path / "d.npz", x_key="extra", y_key=None)
    assert Xe.shape == (2,) and ye is None
    with pytest.raises(KeyError, match="extra"):
        data.read_npz(tmp_path / "d.npz", x_key="features")
    with pytest.raises(KeyError, match="labels"):
        data.read_npz(tmp_path / "d.npz", y_key="labels")
    np.savez(tmp_path / "x_only.npz", X=X)
    assert data.read_npz(tmp_path / "x_only.npz")[1] is None


def test_npz_refuses_pickles_and_non_archives(tmp_path):
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="unpickling"):
        data.read_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not an .npz"):
        data.read_npz(tmp_path / "junk.npz")


# --------------------------------------------------------------------------------------------
# load_file
# --------------------------------------------------------------------------------------------


def test_load_file_dispatch(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,t\n1,2,x\n3,4,y\n")
    X, y = data.load_file(tmp_path / "d.csv", target="t")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])

    (tmp_path / "d.tsv").write_text("1\t2\t0\n3\t4\t1\n")
    X, y = data.load_file(tmp_path / "d.tsv", target=-1)
    np.testing.assert_array_equal(y, [0, 1])

    np.savez(tmp_path / "d.npz", X=np.ones((3, 2, 2), dtype=np.uint8), y=np.arange(3), lab=np.ones(3))
    X, y = data.load_file(tmp_path / "d.npz")
    assert X.shape == (3, 4) and X.dtype == np.float64
    np.testing.assert_array_equal(y, [0, 1, 2])
    assert data.load_file(tmp_path / "d.npz", target="lab")[1].dtype == np.float64

    images = _sample(np.uint8, (6, 4, 5))
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8)
    data.write_idx(tmp_path / "img-idx3-ubyte.gz", images)
    data.write_idx(tmp_path / "lab-idx1-ubyte", labels)
    X, y = data.load_file(tmp_path / "img-idx3-ubyte.gz", target=tmp_path / "lab-idx1-ubyte")
    assert X.shape == (6, 20) and X.dtype == np.float64
    np.testing.assert_array_equal(X, images.reshape(6, 20))
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    X, y = data.load_file(tmp_path / "img-idx3-ubyte.gz")
    assert X.shape == (6, 20) and y is None

    # IDX recognised by its magic bytes under any name
    data.write_idx(tmp_path / "images.bin", _sample(np.float32, (3, 2)))
    X, _ = data.load_file(tmp_path / "images.bin")
    assert X.dtype == np.float32 and X.shape == (3, 2)


def test_load_file_errors(tmp_path):
    (tmp_path / "notes.dat").write_text("hello")
    with pytest.raises(ValueError, match="cannot tell the format"):
        data.load_file(tmp_path / "notes.dat")
    data.write_idx(tmp_path / "img.idx", _sample(np.uint8, (4, 2, 2)))
    data.write_idx(tmp_path / "lab.idx", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="one label per image"):
        data.load_file(tmp_path / "img.idx", target=tmp_path / "lab.idx")
    with pytest.raises(TypeError, match="labels IDX file"):
        data.load_file(tmp_path / "img.idx", target=0)
    with pytest.raises(FileNotFoundError):
        data.load_file(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------
# train_test_split
# --------------------------------------------------------------------------------------------


def test_split_sizes_no_overlap_and_seed():
    X = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    X_tr, X_te, y_tr, y_te = data.train_test_split(X, y, test_size=0.2, seed=1)
    assert X_tr.shape == (40, 2) and X_te.shape == (10, 2)
    np.testing.assert_array_equal(X_tr[:, 0] // 2, y_tr)  # rows and labels stay paired
    np.testing.assert_array_equal(X_te[:, 0] // 2, y_te)
    assert set(y_tr).isdisjoint(y_te) and set(y_tr) | set(y_te) == set(range(50))
    again = data.train_test_split(X, y, test_size=0.2, seed=1)
    np.testing.assert_array_equal(again[3], y_te)
    other = data.train_test_split(X, y, test_size=0.2, seed=2)
    assert not np.array_equal(other[3], y_te)
    assert len(data.train_test_split(X, y, test_size=7)[1]) == 7
    assert len(data.train_test_split(X, y, test_size=0.01)[1]) == 1  # rounded up
    assert data.train_test_split(X, None)[2] is None


def test_split_stratified():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    X = np.arange(100.0).reshape(-1, 1)
    X_tr, X_te, y_tr, y_te = data.train_test_split(X, y, test_size=0.2, seed=0, stratify=True)
    np.testing.assert_array_equal(np.bincount(y_te), [12, 6, 2])
    np.testing.assert_array_equal(np.bincount(y_tr), [48, 24, 8])
    np.testing.assert_array_equal(y[X_te[:, 0].astype(int)], y_te)
    assert set(X_tr[:, 0]).isdisjoint(X_te[:, 0])
    # uneven shares are rounded, totals exact
    _, X_te, _, y_te = data.train_test_split(X, y, test_size=0.33, seed=0, stratify=True)
    assert len(y_te) == 33
    assert all(abs(np.sum(y_te == c) - 0.33 * np.sum(y == c)) < 1 for c in range(3))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"test_size": 1.5}, ValueError, r"test_size must be in \(0, 1\) or an int in \[1, n_samples-1\]"),
        ({"test_size": 0.0}, ValueError, "test_size"),
        ({"test_size": 10}, ValueError, "test_size"),
        ({"test_size": 0}, ValueError, "test_size"),
        ({"test_size": "0.2"}, TypeError, "test_size"),
        ({"test_size": True}, TypeError, "test_size"),
        ({"stratify": "yes"}, ValueError, "stratify"),
    ],
)
def test_split_bad_arguments(kwargs, exc, match):
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(exc, match=match):
        data.train_test_split(X, y, **kwargs)


def test_split_bad_inputs():
    with pytest.raises(ValueError, match="same number of samples"):
        data.train_test_split(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="at least 2"):
        data.train_test_split(np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ValueError, match="only 1 sample"):
        data.train_test_split(np.zeros((5, 1)), np.array([0, 0, 0, 0, 1]), stratify=True)
    with pytest.raises(ValueError, match="needs labels"):
        data.train_test_split(np.zeros((5, 1)), None, stratify=True)


# --------------------------------------------------------------------------------------------
# Standardizer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardizer(dtype):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((200, 4)) * [1, 10, 0.1, 1] + [5, -3, 0, 100]).astype(dtype)
    X[:, 3] = dtype(0.1)  # a constant column
    s = data.Standardizer()
    Z = s.fit_transform(X)
    assert Z.dtype == dtype and s.mean_.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(Z[:, :3].mean(axis=0), 0, atol=tol)
    np.testing.assert_allclose(Z[:, :3].std(axis=0), 1, atol=tol)
    np.testing.assert_array_equal(Z[:, 3], 0)
    assert s.std_[3] == 1
    np.testing.assert_allclose(s.inverse_transform(Z), X, rtol=tol, atol=tol)


def test_standardizer_near_constant_column_and_ints():
    X = np.full((1000, 2), 0.1)
    X[:, 1] = np.linspace(0, 1, 1000)
    s = data.Standardizer().fit(X)
    assert s.std_[0] == 1.0
    assert np.all(np.abs(s.transform(X)[:, 0]) < 1e-10)
    Z = data.Standardizer().fit_transform(np.array([[1, 2], [3, 4]]))
    assert Z.dtype == np.float64
    np.testing.assert_array_equal(Z, [[-1, -1], [1, 1]])


def test_standardizer_float32_column_of_a_large_mean_is_scaled():
    """The constant-column test uses float64's rounding (the statistics' dtype): float32's called a
    column of mean 1000 and std 0.1 over 1000 rows constant and left it unscaled."""
    rng = np.random.default_rng(0)
    X = (1000 + 0.1 * rng.standard_normal((1000, 1))).astype(np.float32)
    scaler = data.Standardizer().fit(X)
    np.testing.assert_allclose(scaler.std_, X.astype(np.float64).std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scaler.transform(X).std(axis=0), 1.0, rtol=1e-3)


def test_standardizer_errors():
    s = data.Standardizer()
    with pytest.raises(ValueError, match="not fitted"):
        s.transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        s.fit(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        s.fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(TypeError, match="numbers"):
        s.fit(np.array([["a"]]))
    s.fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="features"):
        s.transform(np.zeros((3, 3)))


def test_standardize_function():
    X_tr = np.array([[0.0, 1.0], [2.0, 3.0]])
    X_te = np.array([[1.0, 2.0]])
    Z_tr, scaler = data.standardize(X_tr)
    np.testing.assert_array_equal(Z_tr, [[-1, -1], [1, 1]])
    _Z_tr2, Z_te, scaler2 = data.standardize(X_tr, X_te)
    np.testing.assert_array_equal(Z_te, [[0, 0]])
    assert isinstance(scaler2, data.Standardizer)
    np.testing.assert_array_equal(scaler.mean_, [1, 2])


def test_write_idx_writes_as_open_would_through_a_symlink(tmp_path):
    """A new IDX file gets open()'s mode (0o666 minus the umask, not mkstemp's 0o600), and a
    symlink stays a link whose target is replaced."""
    old = os.umask(0o022)
    try:
        data.write_idx(tmp_path / "new.idx", np.arange(6, dtype=np.uint8))
        assert os.stat(tmp_path / "new.idx").st_mode & 0o777 == 0o644
        target, link = tmp_path / "target.idx", tmp_path / "link.idx"
        data.write_idx(target, np.arange(3, dtype=np.uint8))
        os.symlink(target, link)
        data.write_idx(link, np.arange(4, dtype=np.uint8))
        assert os.path.islink(link)
        np.testing.assert_array_equal(data.read_idx(target), np.arange(4))
    finally:
        os.umask(old)


def test_a_zero_dimensional_idx_file_is_not_samples(tmp_path):
    data.write_idx(tmp_path / "scalar.idx", np.array(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="a single value .*not samples"):
        data.load_file(tmp_path / "scalar.idx")


def test_mapped_file_rows_are_checked_and_negative_rows_count_from_the_end(tmp_path):
    """A row outside the MappedFile's shape read the file's bytes past it (silently, when the file
    is longer) or failed inside mmap; negative rows raised OverflowError."""
    np.arange(12, dtype=np.float32).tofile(tmp_path / "x.bin")
    first_two = data.MappedFile(tmp_path / "x.bin", np.float32, (2, 3))  # the file holds 4 rows
    np.testing.assert_array_equal(first_two[-1], [3, 4, 5])
    np.testing.assert_array_equal(first_two[np.array([-2, 1])], [[0, 1, 2], [3, 4, 5]])
    for row in (2, -3, np.array([0, 3])):
        with pytest.raises(IndexError, match="out of range for a MappedFile of 2 rows"):
            first_two[row]
    with pytest.raises(IndexError, match="0 <= lo <= hi <= rows"):
        first_two.rows(1, 3)
    second = first_two.rows(1, 2)
    np.testing.assert_array_equal(second[0], [3, 4, 5])
    with pytest.raises(IndexError, match="of 1 rows"):
        second[1]
    assert data.MappedFile(tmp_path / "x.bin", np.float32, 12).shape == (12,)
    for shape in ((4.5, 3), (-1, 3), (), None):
        with pytest.raises(ValueError, match="non-negative integer sizes"):
            data.MappedFile(tmp_path / "x.bin", np.float32, shape)
