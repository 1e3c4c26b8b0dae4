"""Safety of saving and loading: what atomic_write may replace, file modes, temporaries, the
required checksum, structural checks that hold even with verify=False, a fuzz of damaged
model files, custom losses that round-trip, and a clear error for the wrong weights format."""

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import io
from fastnn.io import CorruptFileError, atomic_write, read_safetensors, write_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))


def tiny_model(seed=0):
    """Dense(3,4)-ReLU-Dense(4,2) compiled with Adam and trained 2 steps."""
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.ReLU(), fnn.Dense(4, 2)], seed=seed)
    model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((8, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    for _ in range(2):
        model.train_step(X, y)
    return model


def split(blob: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def join(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def edit_header(path, edit) -> None:
    """Rewrite ``path`` with ``edit(header, payload)`` applied (it may return a new payload)."""
    header, payload = split(path.read_bytes())
    payload = edit(header, payload) or payload
    path.write_bytes(join(header, payload))


def drop_checksum(header, payload=None):
    del header["__metadata__"]["sha256"]


def saved_state(model) -> dict:
    return {
        **{k: np.array(v) for k, v in model.state_arrays().items()},
        **{f"opt.{k}": v for k, v in model.optimizer.state_dict().items() if isinstance(v, np.ndarray)},
    }


@pytest.fixture
def saved(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.safetensors"
    model.save(path)
    return model, path


# -- 1. atomic_write: what it replaces, modes, temporaries -------------------------------------


def _make_fifo(path):
    os.mkfifo(path)


def _make_directory(path):
    os.mkdir(path)


def _make_socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


@pytest.mark.parametrize(
    ("make", "kind"), [(_make_fifo, "named pipe"), (_make_directory, "directory"), (_make_socket, "socket")]
)
def test_save_refuses_targets_that_are_not_regular_files(tmp_path, make, kind):
    path = tmp_path / "s"
    keep = make(path)
    before = os.lstat(path).st_mode
    with pytest.raises(ValueError, match=f"{path}.*{kind}.*not a regular file"):
        tiny_model().save(path)
    assert os.lstat(path).st_mode == before  # still the pipe / directory / socket
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    if keep is not None:
        keep.close()


def test_save_refuses_a_device(tmp_path):
    # never aim at the real /dev/null as root: an implementation without the check replaces it
    # (that is the defect); as root the test makes its own null device in tmp_path instead
    device = "/dev/null"
    if os.geteuid() == 0:
        device = str(tmp_path / "null")
        try:
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError as exc:
            pytest.skip(f"cannot create a device node here ({exc})")
    with pytest.raises(ValueError, match=f"{device}.*character device"):
        with atomic_write(device) as handle:
            handle.write(b"x")
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_save_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "real.safetensors"
    tiny_model(seed=1).save(target)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(os.path.join("store", "real.safetensors"))  # relative, into another directory
    model = tiny_model(seed=2)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.safetensors")
    np.testing.assert_array_equal(fnn.load(target).params, model.params)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["real.safetensors"]


def test_save_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "new.safetensors")
    tiny_model().save(link)
    assert link.is_symlink() and (tmp_path / "new.safetensors").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        tiny_model().save(tmp_path / "m.safetensors")
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_replacing_a_file_keeps_its_mode(saved):
    model, path = saved
    os.chmod(path, 0o640)
    model.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    model.save_weights(path.with_suffix(".npz"))
    os.chmod(path.with_suffix(".npz"), 0o604)
    model.save_weights(path.with_suffix(".npz"))
    assert stat.S_IMODE(os.stat(path.with_suffix(".npz")).st_mode) == 0o604


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_failed_write_removes_its_temporary(tmp_path, error):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_write(path) as handle:
            handle.write(b"new, half written")
            assert len(list(tmp_path.iterdir())) == 2  # the temporary exists meanwhile
            raise error()
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_stale_temporaries_of_fastnn_are_cleaned_and_nothing_else(tmp_path):
    old = time.time() - 2 * 24 * 3600
    stale = [".fastnn-tmp-123-0123456789abcdef-m.safetensors", ".fastnn-tmp-9-fedcba9876543210-other.npz"]
    fresh = ".fastnn-tmp-124-0123456789abcdef-m.safetensors"
    kept = [
        ".tmp-abc-m.safetensors",
        ".fastnn-tmp-xyz",
        ".fastnn-tmp-1-0123-m",
        "notes.txt",
        "x.fastnn-tmp-1-0123456789abcdef-m",
    ]
    for name in [*stale, fresh, *kept]:
        (tmp_path / name).write_bytes(b"junk")
    (tmp_path / ".fastnn-tmp-5-0123456789abcdef-dir").mkdir()
    (tmp_path / ".fastnn-tmp-6-0123456789abcdef-link").symlink_to(tmp_path / "notes.txt")
    for name in [*stale, *kept, ".fastnn-tmp-5-0123456789abcdef-dir"]:
        os.utime(tmp_path / name, (old, old))
    os.utime(tmp_path / ".fastnn-tmp-6-0123456789abcdef-link", (old, old), follow_symlinks=False)
    tiny_model().save(tmp_path / "m.safetensors")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {
        "m.safetensors",
        fresh,
        *kept,
        ".fastnn-tmp-5-0123456789abcdef-dir",
        ".fastnn-tmp-6-0123456789abcdef-link",
    }


KILLED_SAVE = textwrap.dedent("""
    import sys, time
    from fastnn.io import atomic_write
    with atomic_write(sys.argv[1]) as handle:
        handle.write(b"x" * 4096)
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
""")


def test_a_save_killed_midway_leaves_a_temporary_that_a_later_save_cleans(tmp_path):
    path = tmp_path / "m.safetensors"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"writing\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    (left,) = list(tmp_path.iterdir())
    assert left.name.startswith(f".fastnn-tmp-{proc.pid}-") and left.name.endswith("-m.safetensors")
    tiny_model().save(path)
    assert left.exists()  # less than a day old: maybe a save still running
    os.utime(left, (time.time() - 25 * 3600,) * 2)
    tiny_model().save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# -- 2. the checksum is required; the structure is checked even without it ------------------


def test_every_written_file_carries_the_checksum(tmp_path):
    write_safetensors(tmp_path / "t.safetensors", {"a": np.ones(2, np.float32)})
    header, _ = split((tmp_path / "t.safetensors").read_bytes())
    assert len(header["__metadata__"]["sha256"]) == 64
    tensors, meta = read_safetensors(tmp_path / "t.safetensors")
    assert meta == {} and np.array_equal(tensors["a"], np.ones(2))


def test_a_file_without_checksum_is_refused_unless_verify_false(saved):
    model, path = saved
    edit_header(path, drop_checksum)
    for load in (fnn.load, read_safetensors, fnn.model.load):
        with pytest.raises(CorruptFileError, match="no fastnn checksum.*verify=False"):
            load(path)
    np.testing.assert_array_equal(fnn.load(path, verify=False).params, model.params)
    assert set(read_safetensors(path, verify=False)[0]) == {f"param.{n}" for n, _, _ in model.named_parameters()} | {
        "optimizer.exp_avg",
        "optimizer.exp_avg_sq",
    }


def _offsets(header, name):
    return header[name]["data_offsets"]


def _overlap(header, payload):
    begin = _offsets(header, "param.0.bias")[0]
    header["param.2.bias"]["data_offsets"] = [begin, begin + 8]  # 8 bytes inside param.0.bias


def _gap(header, payload):
    last = max(header.items(), key=lambda kv: kv[1]["data_offsets"][0] if kv[0] != "__metadata__" else -1)[0]
    begin, end = _offsets(header, last)
    header[last]["data_offsets"] = [begin + 4, end + 4]
    return payload[:begin] + b"\0" * 4 + payload[begin:]


def _trailing(header, payload):
    return payload + b"\0" * 8


def _retype(header, payload):
    header["param.0.weight"]["dtype"] = "I32"  # same size, other type


def _reshape(header, payload):
    header["param.0.weight"]["shape"] = [4, 3]  # same size, other shape


def _unknown_dtype(header, payload):
    header["param.0.bias"]["dtype"] = "BF16"
    header["param.0.bias"]["shape"] = [8]


def _negative_shape(header, payload):
    header["param.0.weight"]["shape"] = [-3, -4]


def _huge_zero_size_tensor(header, payload):
    header["extra"] = {"dtype": "F32", "shape": [2**62, 0], "data_offsets": [0, 0]}


def _float_shape(header, payload):
    header["param.2.bias"]["shape"] = [2.0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_overlap, "overlaps"),
        (_gap, "gap of 4 bytes"),
        (_trailing, "8 bytes after the last tensor"),
        (_unknown_dtype, "unknown or unsupported dtype 'BF16'"),
        (_negative_shape, "invalid shape"),
        (_huge_zero_size_tensor, "impossible shape"),
        (_float_shape, "invalid shape"),
        (_retype, "dtype int32, its architecture needs float32"),
        (_reshape, r"shape \(4, 3\), expected \(3, 4\)"),
    ],
)
def test_malformed_layout_is_refused_even_with_verify_false(saved, edit, message):
    _, path = saved

    def both(header, payload):
        drop_checksum(header)
        return edit(header, payload)

    edit_header(path, both)
    with pytest.raises(CorruptFileError, match=message):
        fnn.load(path, verify=False)
    with pytest.raises(CorruptFileError, match=f"{message}|no fastnn checksum"):
        fnn.load(path)


def test_edits_that_keep_the_checksum_are_caught_by_it(saved):
    _, path = saved
    edit_header(path, _retype)
    with pytest.raises(CorruptFileError, match="integrity"):
        fnn.load(path)


def test_duplicate_header_keys_are_refused(saved):
    _, path = saved
    header, payload = split(path.read_bytes())
    raw = json.dumps(header).encode()
    raw = raw[:-1] + b', "param.0.bias": ' + json.dumps(header["param.0.bias"]).encode() + b"}"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    with pytest.raises(CorruptFileError, match="duplicate keys"):
        read_safetensors(path, verify=False)


def test_files_of_the_safetensors_package_read_with_verify_false(tmp_path):
    stn = pytest.importorskip("safetensors.numpy")
    arrays = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "i": np.array([1, -2], np.int64),
        "h": np.ones((2, 1, 2), np.float16),
        "e": np.zeros((0, 3), np.float64),
        "b": np.array([True, False]),
    }
    path = tmp_path / "theirs.safetensors"
    stn.save_file(arrays, str(path), metadata={"format": "np"})
    tensors, meta = read_safetensors(path, verify=False)
    assert meta == {"format": "np"} and set(tensors) == set(arrays)
    for name, arr in arrays.items():
        assert tensors[name].dtype == arr.dtype and np.array_equal(tensors[name], arr)
    with pytest.raises(CorruptFileError, match="verify=False"):
        read_safetensors(path)


# -- 3. fuzz: a damaged model file never loads silently and never crashes otherwise ----------


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    model = tiny_model()
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    model.save(path)
    return path.read_bytes(), saved_state(model), path.parent


def _flip(data, blob):
    positions = data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=4))
    out = bytearray(blob)
    for pos in positions:
        out[pos] ^= data.draw(st.integers(1, 255))
    return bytes(out)


def _truncate(data, blob):
    return blob[: data.draw(st.integers(0, len(blob) - 1))]


JSON_VALUES = st.one_of(
    st.integers(-(2**64), 2**64),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(-3, 2**40), max_size=3),
)


def _edit_field(data, blob):
    header, payload = split(blob)
    names = sorted(k for k in header if k != "__metadata__")
    name = data.draw(st.sampled_from(names))
    what = data.draw(st.sampled_from(["data_offsets", "dtype", "shape", "name", "metadata", "drop"]))
    if what == "name":
        header[data.draw(st.text(min_size=1, max_size=12))] = header.pop(name)
    elif what == "drop":
        del header[name]
    elif what == "metadata":
        meta = header["__metadata__"]
        key = data.draw(st.sampled_from(sorted(meta)))
        old = meta[key]
        if data.draw(st.booleans()) and old:
            pos = data.draw(st.integers(0, len(old) - 1))
            meta[key] = old[:pos] + data.draw(st.characters()) + old[pos + 1 :]
        else:
            meta[key] = data.draw(st.text(max_size=20))
    elif what == "dtype":
        header[name]["dtype"] = data.draw(
            st.sampled_from(["F64", "F32", "F16", "I32", "I64", "U8", "BOOL", "BF16", "x", ""]) | JSON_VALUES
        )
    elif what == "shape":
        header[name]["shape"] = data.draw(st.lists(st.integers(-2, 2**62), max_size=3) | JSON_VALUES)
    else:
        header[name]["data_offsets"] = data.draw(
            st.lists(st.integers(-8, len(payload) + 8), min_size=2, max_size=2) | JSON_VALUES
        )
    return join(header, payload)


def _leaves(value, path=()):
    """Paths to every scalar inside a JSON value."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


SMALL_JSON = st.one_of(
    st.integers(-3, 50), st.text(max_size=6), st.none(), st.booleans(), st.floats(), st.just([]), st.just({})
)


def _edit_metadata_json(data, blob):
    """Change one field inside one of the JSON documents of the metadata (architecture, loss ...)."""
    header, payload = split(blob)
    meta = header["__metadata__"]
    key = data.draw(st.sampled_from(["architecture", "loss", "optimizer", "training", "callbacks"]))
    doc = json.loads(meta[key])
    paths = [p for p in _leaves(doc) if p]
    if not paths:
        doc = data.draw(SMALL_JSON)
    else:
        *parents, last = data.draw(st.sampled_from(paths))
        node = doc
        for step in parents:
            node = node[step]
        if data.draw(st.booleans()):
            node[last] = data.draw(SMALL_JSON)
        else:
            del node[last]
    meta[key] = json.dumps(doc)
    return join(header, payload)


MUTATIONS = st.sampled_from([_flip, _truncate, _edit_field, _edit_metadata_json])


def _load_mutated(data, original, verify):
    blob, state, directory = original
    mutate = data.draw(MUTATIONS)
    damaged = mutate(data, blob)
    path = directory / "damaged.safetensors"
    path.write_bytes(damaged)
    try:
        model = fnn.load(path, verify=verify)
    except CorruptFileError as exc:
        assert str(path) in str(exc)
        event(f"{mutate.__name__}: {str(exc).replace(str(path), '')[:40]}")  # --hypothesis-show-statistics
        return None, state
    event(f"{mutate.__name__}: loaded")
    return model, state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damaged_files_are_refused_or_identical(original, data):
    model, state = _load_mutated(data, original, verify=True)
    if model is not None:  # only changes the checksum does not cover (header padding, spacing)
        loaded = saved_state(model)
        assert loaded.keys() == state.keys()
        for key, value in state.items():
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_unverified_loads_fail_only_with_corrupt_file_error(original, data):
    model, state = _load_mutated(data, original, verify=False)
    if model is not None:
        for name, value, _ in model.named_parameters():
            assert value.dtype == np.float32 and value.shape == state[name].shape


# -- 4. custom losses round-trip ----------------------------------------------------------


@fnn.register_loss
class ScaledSquaredError(fnn.losses.Loss):
    """scale * mean squared error, in plain NumPy (a user's loss)."""

    name = "test_scaled_squared_error"

    def __init__(self, *, reduction="mean", scale=2.0):
        super().__init__(reduction=reduction)
        self.scale = float(scale)

    def call(self, output, target, grad, compute_grad=True):
        return self._value_and_grad, (output, target, grad, compute_grad)

    def _value_and_grad(self, output, target, grad, compute_grad):
        diff = output - target
        norm = diff.size if self.reduction == "mean" else 1
        if compute_grad:
            grad[...] = 2 * self.scale * diff / norm
        return float(self.scale * np.sum(diff * diff) / norm)

    def get_config(self):
        return dict(super().get_config(), scale=self.scale)


def test_a_registered_custom_loss_round_trips_through_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 3)), rng.standard_normal((16, 2))
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.ReLU(), fnn.Dense(4, 2)], seed=0)
    model.compile(loss=ScaledSquaredError(scale=3.0, reduction="sum"), optimizer="adam")
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    assert type(loaded.loss) is ScaledSquaredError
    assert loaded.loss.get_config() == {"name": "test_scaled_squared_error", "reduction": "sum", "scale": 3.0}
    assert loaded.evaluate(X, y)["loss"] == pytest.approx(model.evaluate(X, y)["loss"])
    assert fnn.Sequential([fnn.Dense(3, 2)]).compile(loss="test_scaled_squared_error").loss.scale == 2.0
    del fnn.losses.LOSSES["test_scaled_squared_error"]  # as in a process that did not register it
    try:
        with pytest.raises(CorruptFileError, match="Unknown loss 'test_scaled_squared_error'.*register_loss"):
            fnn.load(tmp_path / "m.safetensors")
    finally:
        fnn.register_loss(ScaledSquaredError)


def test_the_loss_registry_is_the_one_table():
    assert fnn.register_loss is fnn.losses.register_loss
    builtin = {n: c for n, c in fnn.losses.LOSSES.items() if c.__module__ == "fastnn.losses"}
    assert set(builtin) == {"cross_entropy", "binary_cross_entropy", "mse", "mae", "huber"}
    assert all(fnn.losses.from_config({"name": n}).name == n for n in builtin)
    with pytest.raises(ValueError, match="belongs to fastnn's MSE"):
        fnn.register_loss(type("Mine", (fnn.losses.Loss,), {"name": "mse"}))
    with pytest.raises(ValueError, match="needs its own class attribute `name`"):
        fnn.register_loss(type("Nameless", (fnn.losses.MSE,), {}))
    with pytest.raises(TypeError, match="subclass of fastnn.losses.Loss"):
        fnn.register_loss(object)


def test_an_unregistered_loss_says_how_to_register_it():
    with pytest.raises(ValueError, match="Unknown loss 'my_loss'.*@fastnn.register_loss"):
        fnn.losses.from_config({"name": "my_loss"})


# -- load_weights on a safetensors file ----------------------------------------------------


def test_check_npz_file_points_safetensors_files_to_fnn_load(saved, tmp_path):
    model, path = saved
    with pytest.raises(CorruptFileError, match=r"safetensors file.*fnn\.load\(path\)"):
        io.check_npz_file(path)
    model.save_weights(tmp_path / "w.npz")
    io.check_npz_file(tmp_path / "w.npz")
    (tmp_path / "junk").write_bytes(b"hello world, not weights")
    with pytest.raises(CorruptFileError, match="not an .npz weights file"):
        io.check_npz_file(tmp_path / "junk")
