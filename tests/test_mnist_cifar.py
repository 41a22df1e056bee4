"""Tests for MNIST-CIFAR loading (sbjax.data.mnist_cifar, sbjax.data.sources).

Synthetic files are written at test time in the real formats (gzipped IDX, CIFAR-10 python pickles
and binary records, the tarballs), so the real readers run. Their pixels are separable by
construction and carry each image's provenance:

* MNIST image (row i, digit d): every pixel 20 + 20 d, except pixel (0, 0) = i // 256 and
  (0, 1) = i % 256.
* CIFAR image (batch b, row r, class c): red 10 + 20 c, green 200 - 10 c, blue 50, except pixel
  (0, 0) = (b, r // 256, r % 256) (b = 0 for the test batch).

Tests on the real subset run when ../shared/data/mnist_cifar_subset exists and skip otherwise.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

from sbjax.data import mnist_cifar as mc
from sbjax.data import sources
from sbjax.data.mnist_cifar import (
    IMAGE_SHAPE,
    MNIST_ROWS,
    ChecksumMismatchError,
    CorruptDataError,
    DataNotFoundError,
    SubsetWarning,
    load_mnist_cifar,
    mnist_block_mask,
    permute_block,
)

pytestmark = pytest.mark.filterwarnings("ignore::sbjax.data.sources.SubsetWarning")

SUBSET_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_cifar_subset"

# Class counts of the synthetic fixture (digits / CIFAR classes not listed: OTHER_* each).
MNIST_TRAIN = {0: 23, 1: 31, 4: 27}
MNIST_TEST = {0: 9, 1: 12, 4: 11}
CIFAR_TRAIN = {1: 18, 9: 20, 0: 15, 8: 16}
CIFAR_TEST = {1: 8, 9: 11, 0: 7, 8: 9}
OTHER_TRAIN, OTHER_TEST = 3, 2


# --------------------------------------------------------------------------------------------------
# Synthetic fixture


def _labels(counts: dict[int, int], other: int, seed: int) -> np.ndarray:
    y = np.concatenate([np.full(counts.get(c, other), c) for c in range(10)])
    return np.random.default_rng(seed).permutation(y).astype(np.uint8)


def _mnist_images(y: np.ndarray) -> np.ndarray:
    x = np.repeat((20 + 20 * y.astype(np.int64))[:, None, None], 28, 1).repeat(28, 2)
    i = np.arange(len(y))
    x[:, 0, 0], x[:, 0, 1] = i // 256, i % 256
    return x.astype(np.uint8)


def _cifar_images(y: np.ndarray, batch: int) -> np.ndarray:
    c = y.astype(np.int64)
    x = np.empty((len(y), 32, 32, 3), np.int64)
    x[..., 0], x[..., 1], x[..., 2] = (
        (10 + 20 * c)[:, None, None],
        (200 - 10 * c)[:, None, None],
        50,
    )
    r = np.arange(len(y))
    x[:, 0, 0, 0], x[:, 0, 0, 1], x[:, 0, 0, 2] = batch, r // 256, r % 256
    return x.astype(np.uint8)


def _cifar_train_batches() -> list[tuple[np.ndarray, np.ndarray]]:
    y = _labels(CIFAR_TRAIN, OTHER_TRAIN, 2)
    parts = np.array_split(y, 5)
    return [(_cifar_images(p, b + 1), p) for b, p in enumerate(parts)]


def write_fixture(root: Path, mnist_kind: str = "gz", cifar_kind: str = "py") -> Path:
    """Writes synthetic MNIST (gz | raw | npz) and CIFAR-10 (py | bin | py_tar | bin_tar) files."""
    root.mkdir(parents=True, exist_ok=True)
    for split, counts, other, seed in (
        ("train", MNIST_TRAIN, OTHER_TRAIN, 0),
        ("test", MNIST_TEST, OTHER_TEST, 1),
    ):
        y = _labels(counts, other, seed)
        x = _mnist_images(y)
        prefix = "train" if split == "train" else "t10k"
        if mnist_kind == "npz":
            continue
        suffix = ".gz" if mnist_kind == "gz" else ""
        sources.write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", x)
        sources.write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", y)
    if mnist_kind == "npz":
        ytr, yte = _labels(MNIST_TRAIN, OTHER_TRAIN, 0), _labels(MNIST_TEST, OTHER_TEST, 1)
        np.savez(
            root / "mnist.npz",
            x_train=_mnist_images(ytr),
            y_train=ytr,
            x_test=_mnist_images(yte),
            y_test=yte,
        )

    binary = cifar_kind.startswith("bin")
    sub = root / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    sub.mkdir(exist_ok=True)
    write = sources.write_cifar_binary_batch if binary else sources.write_cifar_python_batch
    ext = ".bin" if binary else ""
    for b, (x, y) in enumerate(_cifar_train_batches(), start=1):
        write(sub / f"data_batch_{b}{ext}", x, y)
    yt = _labels(CIFAR_TEST, OTHER_TEST, 3)
    write(sub / f"test_batch{ext}", _cifar_images(yt, 0), yt)
    if cifar_kind.endswith("_tar"):
        name = "cifar-10-binary.tar.gz" if binary else "cifar-10-python.tar.gz"
        with tarfile.open(root / name, "w:gz") as tar:
            tar.add(sub, arcname=sub.name)
        for f in sub.iterdir():
            f.unlink()
        sub.rmdir()
    return root


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("mc_files"))


def _load(folder, **kw):
    kw.setdefault("source", "files")
    return load_mnist_cifar(data_dir=folder, **kw)


def decode(split) -> dict[str, np.ndarray]:
    """Reads class and provenance back from the pixels of uint8-scaled composite images."""
    x = np.rint(np.asarray(split.x, np.float64) * (255.0 if split.x.dtype != np.uint8 else 1.0))
    x = x.astype(np.int64)
    return {
        "digit": (x[:, 10, 10, 0] - 20) // 20,
        "mnist_row": x[:, 2, 2, 0] * 256 + x[:, 2, 3, 0],
        "cifar_class": (x[:, 40, 10, 0] - 10) // 20,
        "cifar_index": np.where(x[:, 32, 0, 0] > 0, 10_000 * (x[:, 32, 0, 0] - 1), 0)
        + x[:, 32, 0, 1] * 256
        + x[:, 32, 0, 2],
    }


# --------------------------------------------------------------------------------------------------
# Raw readers against hand-built bytes


def test_idx_reader_reads_hand_built_gzip_bytes(tmp_path):
    x = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    raw = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 28, 28) + x.tobytes()
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(sources.read_idx(tmp_path / "a-idx3-ubyte.gz"), x)
    labels = struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9])
    (tmp_path / "l-idx1-ubyte").write_bytes(labels)
    np.testing.assert_array_equal(sources.read_idx(tmp_path / "l-idx1-ubyte"), [7, 0, 9])
    # The library's writer produces exactly these bytes (magic 0x00000803 / 0x00000801).
    sources.write_idx(tmp_path / "w.gz", x)
    assert gzip.decompress((tmp_path / "w.gz").read_bytes()) == raw
    sources.write_idx(tmp_path / "wl", np.array([7, 0, 9], np.uint8))
    assert (tmp_path / "wl").read_bytes() == labels


def test_idx_reader_rejects_damaged_files(tmp_path):
    good = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 28, 28) + bytes(2 * 784)
    with pytest.raises(CorruptDataError, match="truncated"):
        sources.parse_idx(good[:-10], "short")
    with pytest.raises(CorruptDataError, match="not an IDX"):
        sources.parse_idx(b"\x01\x02" + good[2:], "magic")
    (tmp_path / "t.gz").write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(CorruptDataError, match="gzip"):
        sources.read_idx(tmp_path / "t.gz")


def test_cifar_python_batch_hand_pickled_channel_order(tmp_path):
    # Row layout: 1024 red values, 1024 green, 1024 blue, each a row-major 32x32 plane.
    rows = np.zeros((2, 3072), np.uint8)
    rows[0, :1024] = 255  # image 0 pure red
    rows[1, 2048 + 33] = 7  # image 1: blue at (row 1, col 1)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": rows, b"labels": [1, 9], b"batch_label": b"x"}, f, protocol=2)
    x, y = sources.read_cifar_python_batch(tmp_path / "data_batch_1")
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [1, 9])
    assert (x[0, ..., 0] == 255).all() and (x[0, ..., 1:] == 0).all()
    assert x[1, 1, 1, 2] == 7 and x[1].sum() == 7
    # Binary record: 1 label byte then the same 3072 bytes.
    (tmp_path / "b.bin").write_bytes(
        bytes([1]) + rows[0].tobytes() + bytes([9]) + rows[1].tobytes()
    )
    xb, yb = sources.read_cifar_binary_batch(tmp_path / "b.bin")
    np.testing.assert_array_equal(xb, x)
    np.testing.assert_array_equal(yb, y)
    with pytest.raises(CorruptDataError, match="3073"):
        sources.parse_cifar_binary_batch(b"\x00" * 3074)


def test_cifar_unpickler_refuses_code_execution(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(CorruptDataError, match="refused"):
        sources.read_cifar_python_batch(tmp_path / "evil")
    with pytest.raises(CorruptDataError, match="b'data'"):
        sources.parse_cifar_python_batch(pickle.dumps({b"labels": [1]}, protocol=2))


# --------------------------------------------------------------------------------------------------
# Pairing on the synthetic files


def test_shapes_range_layout(files_dir):
    d = _load(files_dir)
    assert d.source == "files" and d.version == "A" and not d.complete
    for s in d.sets().values():
        assert s.x.shape == (len(s), *IMAGE_SHAPE) and s.x.dtype == np.float32
        assert s.y.dtype == np.int32 and set(np.unique(s.y)) == {0, 1}
        assert (s.y == 1).sum() == (s.y == 0).sum()
        assert s.x.min() >= 0.0 and s.x.max() <= 1.0
        m = s.x[:, MNIST_ROWS]
        # zero padding of 2 around the 28x28 digit; digit repeated over the 3 channels
        assert not m[:, :2].any() and not m[:, 30:].any() and not m[:, :, :2].any()
        assert not m[:, :, 30:].any()
        np.testing.assert_array_equal(m[..., 0], m[..., 1])
        np.testing.assert_array_equal(m[..., 0], m[..., 2])
    u8 = _load(files_dir, dtype="uint8")
    assert u8.train.x.dtype == np.uint8
    np.testing.assert_array_equal(u8.train.x.astype(np.float32) / 255.0, d.train.x)


def test_label_logic_and_provenance(files_dir):
    d = _load(files_dir)
    for s in (d.train, d.test):
        dec = decode(s)
        # label 1 = MNIST "1" over a truck; label 0 = MNIST "0" over an automobile
        np.testing.assert_array_equal(dec["digit"], s.y)
        np.testing.assert_array_equal(dec["cifar_class"], np.where(s.y == 1, 9, 1))
        np.testing.assert_array_equal(dec["mnist_row"], s.mnist_index)
    # cifar_index: 10000 * (batch - 1) + row in train; row in the test batch
    np.testing.assert_array_equal(decode(d.test)["cifar_index"], d.test.cifar_index)
    np.testing.assert_array_equal(decode(d.train)["cifar_index"], d.train.cifar_index)


def test_pool_cut_sizes_and_no_reuse(files_dir):
    d = _load(files_dir)
    assert d.pool_sizes["train"] == (23, 31, 18, 20)
    assert d.pool_sizes["test"] == (9, 12, 8, 11)
    # MNIST-randomised: digits {0,1} pooled (21 test, 54 train) and split in halves 10/11.
    assert d.pool_sizes["test_mnist_randomized"] == (10, 11, 8, 11)
    # CIFAR-randomised: automobile+truck test pool 19 -> halves 9/10.
    assert d.pool_sizes["test_cifar_randomized"] == (9, 12, 9, 10)
    assert d.sizes == {
        "train": 36,
        "test": 16,
        "test_mnist_randomized": 16,
        "test_cifar_randomized": 18,
    }
    for s in d.sets().values():
        dec = decode(s)
        assert len(np.unique(dec["mnist_row"])) == len(s)  # no MNIST image twice
        assert len(np.unique(dec["cifar_index"])) == len(s)  # no CIFAR image twice
        assert len(np.unique(s.mnist_index)) == len(np.unique(s.cifar_index)) == len(s)
    full = _load(files_dir, randomized_train=True)
    assert full.sizes["train_mnist_randomized"] == 36  # halves 27/27, CIFAR 18/20
    assert full.sizes["train_cifar_randomized"] == 38  # CIFAR halves 19/19, MNIST 23/31


def test_determinism_by_seed(files_dir):
    a, b, c = _load(files_dir, seed=3), _load(files_dir, seed=3), _load(files_dir, seed=4)
    for name, s in a.sets().items():
        t = b.sets()[name]
        np.testing.assert_array_equal(s.x, t.x)
        np.testing.assert_array_equal(s.y, t.y)
        np.testing.assert_array_equal(s.mnist_index, t.mnist_index)
    assert not np.array_equal(a.train.mnist_index, c.train.mnist_index)
    assert not np.array_equal(a.train.y, c.train.y)
    # Each set has its own stream: building extra sets leaves the others unchanged.
    e = _load(files_dir, seed=3, randomized_train=True)
    np.testing.assert_array_equal(e.train.x, a.train.x)
    np.testing.assert_array_equal(e.test_mnist_randomized.x, a.test_mnist_randomized.x)


def _rate(split, key: str, value: int, label: int) -> float:
    dec = decode(split)
    return float(np.mean(dec[key][split.y == label] == value))


def test_randomized_sets_block_independent_of_label(files_dir):
    d = _load(files_dir)
    rm, rc = decode(d.test_mnist_randomized), decode(d.test_cifar_randomized)
    # The other block still determines the label.
    np.testing.assert_array_equal(rm["cifar_class"], np.where(d.test_mnist_randomized.y == 1, 9, 1))
    np.testing.assert_array_equal(rc["digit"], d.test_cifar_randomized.y)
    # The randomised block only contains the version's classes...
    assert set(rm["digit"]) <= {0, 1} and set(rc["cifar_class"]) <= {1, 9}
    # ...and carries no label information: over many seeds P(block class | y) is equal for both y.
    p_m, p_c = [], []
    for seed in range(30):
        e = _load(files_dir, seed=seed)
        p_m.append([_rate(e.test_mnist_randomized, "digit", 1, lab) for lab in (0, 1)])
        p_c.append([_rate(e.test_cifar_randomized, "cifar_class", 9, lab) for lab in (0, 1)])
    p_m, p_c = np.mean(p_m, 0), np.mean(p_c, 0)
    assert abs(p_m[0] - p_m[1]) < 0.1 and 0.35 < p_m[0] < 0.8, p_m
    assert abs(p_c[0] - p_c[1]) < 0.1 and 0.35 < p_c[0] < 0.8, p_c
    # In the standard set the same rates are 0 and 1.
    assert _rate(d.test, "digit", 1, 0) == 0.0 and _rate(d.test, "digit", 1, 1) == 1.0


def test_permute_block_numpy_and_jax(files_dir):
    d = _load(files_dir)
    p = permute_block(d.test, "mnist", 0)
    np.testing.assert_array_equal(p.y, d.test.y)
    np.testing.assert_array_equal(p.x[:, 32:], d.test.x[:, 32:])  # CIFAR block untouched
    np.testing.assert_array_equal(decode(p)["mnist_row"], p.mnist_index)  # index follows pixels
    np.testing.assert_array_equal(np.sort(p.mnist_index), np.sort(d.test.mnist_index))
    assert not np.array_equal(p.mnist_index, d.test.mnist_index)
    q = permute_block(d.test, "cifar", np.random.default_rng(1))
    np.testing.assert_array_equal(q.x[:, :32], d.test.x[:, :32])
    np.testing.assert_array_equal(decode(q)["cifar_index"], q.cifar_index)

    import jax

    xj = jax.numpy.asarray(d.test.x)
    f = jax.jit(lambda x, k: permute_block(x, "mnist", k))
    out = np.asarray(f(xj, jax.random.key(0)))
    np.testing.assert_array_equal(out[:, 32:], d.test.x[:, 32:])
    rows = decode(mc.Split(out, d.test.y, d.test.mnist_index, d.test.cifar_index))["mnist_row"]
    assert sorted(rows) == sorted(d.test.mnist_index)

    pb = _load(files_dir, randomize_mode="permute_block")
    assert pb.sizes["test_mnist_randomized"] == pb.sizes["test"] == 16
    np.testing.assert_array_equal(pb.test_mnist_randomized.x[:, 32:], pb.test.x[:, 32:])
    np.testing.assert_array_equal(pb.test_cifar_randomized.x[:, :32], pb.test.x[:, :32])


@pytest.mark.parametrize(
    "version, digits, classes, sizes",
    [("B", (1, 4), (1, 9), (36, 16)), ("C", (0, 1), (0, 8), (30, 14))],
)
def test_versions_b_c_class_mapping(files_dir, version, digits, classes, sizes):
    d = _load(files_dir, version=version)
    assert (d.sizes["train"], d.sizes["test"]) == sizes
    for s in (d.train, d.test):
        dec = decode(s)
        np.testing.assert_array_equal(dec["digit"], np.where(s.y == 1, digits[1], digits[0]))
        np.testing.assert_array_equal(
            dec["cifar_class"], np.where(s.y == 1, classes[1], classes[0])
        )
    assert d.metadata["dataset"] == f"mnist_cifar_{version.lower()}"


@pytest.mark.parametrize(
    "mnist_kind, cifar_kind", [("raw", "bin"), ("gz", "py_tar"), ("npz", "bin_tar")]
)
def test_all_file_formats_agree(files_dir, tmp_path, mnist_kind, cifar_kind):
    other = write_fixture(tmp_path / "f", mnist_kind, cifar_kind)
    a, b = _load(files_dir, seed=5), _load(other, seed=5)
    for name, s in a.sets().items():
        np.testing.assert_array_equal(s.x, b.sets()[name].x)
        np.testing.assert_array_equal(s.cifar_index, b.sets()[name].cifar_index)


def test_sizes_reuse_and_bad_params(files_dir):
    d = _load(files_dir, n_train=20, n_test=10)
    assert d.sizes == {
        "train": 20,
        "test": 10,
        "test_mnist_randomized": 10,
        "test_cifar_randomized": 10,
    }
    with pytest.raises(ValueError, match=r"n_train=1000 .*<= 36"):
        _load(files_dir, n_train=1000)
    with pytest.raises(ValueError, match="n_test=7"):
        _load(files_dir, n_test=7)
    r = _load(files_dir, n_train=100, allow_reuse=True)
    assert r.sizes["train"] == 100
    # reuse is spread out: each image of the smallest pool (18) at most ceil(50 / 18) = 3 times
    assert np.bincount(r.train.cifar_index[r.train.y == 1]).max() <= 3
    np.testing.assert_array_equal(decode(r.train)["digit"], r.train.y)
    for kw, name in [
        ({"version": "D"}, "version"),
        ({"source": "web"}, "source"),
        ({"verify": "maybe"}, "verify"),
        ({"seed": -1}, "seed"),
        ({"randomize_mode": "x"}, "randomize_mode"),
        ({"dtype": "f16"}, "dtype"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}="):
            _load(files_dir, **kw)


def test_version_missing_from_source_is_a_named_error(files_dir, tmp_path):
    # A source without digit 4 cannot give version B.
    root = write_fixture(tmp_path / "no4")
    for prefix in ("train", "t10k"):
        y = sources.read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").copy()
        y[y == 4] = 5
        sources.write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    with pytest.raises(ValueError, match=r"^version='B'.*MNIST digits \(1, 4\)"):
        _load(root, version="B")


# --------------------------------------------------------------------------------------------------
# Checksums and subsets


def test_subset_files_warn_and_continue(files_dir):
    with pytest.warns(SubsetWarning, match="instead of the standard 60000"):
        d = _load(files_dir)
    assert d.sizes["train"] == 36


def test_strict_verification_refuses_unpublished_files(files_dir):
    with pytest.raises(ChecksumMismatchError, match="differs from the published"):
        _load(files_dir, verify="strict")


def test_full_size_file_with_wrong_checksum_is_an_error(tmp_path, files_dir):
    root = write_fixture(tmp_path / "full")
    y = np.tile(np.arange(10, dtype=np.uint8), 1000)  # 10,000 labels: the standard test size
    sources.write_idx(root / "t10k-labels-idx1-ubyte.gz", y)
    sources.write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((10_000, 28, 28), np.uint8))
    with pytest.raises(ChecksumMismatchError, match="full standard size"):
        _load(root)
    with pytest.warns(SubsetWarning, match="does not match the published"):
        d = _load(root, verify="warn")
    assert d.sizes["test"] == 2 * min(1000, 1000, 8, 11)


def test_full_size_cifar_batch_with_wrong_content_is_an_error(tmp_path):
    root = write_fixture(tmp_path / "cf", cifar_kind="bin")
    y = np.tile(np.arange(10, dtype=np.uint8), 1000)  # first labels 0,1,2,... not 6,9,9,4,1
    sources.write_cifar_binary_batch(
        root / "cifar-10-batches-bin" / "data_batch_1.bin",
        np.zeros((10_000, 32, 32, 3), np.uint8),
        y,
    )
    with pytest.raises(ChecksumMismatchError, match="data_batch_1"):
        _load(root)


def test_published_checksum_match_is_accepted_silently(tmp_path, monkeypatch):
    import warnings

    root = write_fixture(tmp_path / "pub", cifar_kind="py_tar")
    for key, pub in sources.MNIST_GZ_FILES.items():
        monkeypatch.setitem(
            sources.MNIST_GZ_FILES,
            key,
            sources.PublishedFile(pub.name, 0, sources.sha256_file(root / pub.name)),
        )
    tar = root / "cifar-10-python.tar.gz"
    monkeypatch.setattr(
        sources, "CIFAR_PYTHON_TAR", sources.PublishedFile(tar.name, 0, sources.sha256_file(tar))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsetWarning)
        d = _load(root, verify="strict")
    assert d.complete and d.sizes["train"] == 36


def test_damaged_files_raise_even_without_hashing(tmp_path):
    root = write_fixture(tmp_path / "bad")
    p = root / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(CorruptDataError, match="train-images"):
        _load(root, verify="off")
    root2 = write_fixture(tmp_path / "badtar", cifar_kind="py_tar")
    t = root2 / "cifar-10-python.tar.gz"
    t.write_bytes(t.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match="cifar-10-python.tar.gz"):
        _load(root2)


# --------------------------------------------------------------------------------------------------
# Missing data, source selection, tfds plumbing


def test_missing_data_error_is_immediate_and_names_every_place(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    t0 = time.perf_counter()
    with pytest.raises(DataNotFoundError) as e:
        load_mnist_cifar(source="files", data_dir=empty)
    msg = str(e.value)
    assert str(empty) in msg and "train-images-idx3-ubyte.gz" in msg
    assert "cifar-10-python.tar.gz" in msg and "SBJAX_MNIST_CIFAR_DIR" in msg
    assert 'pip install "sbjax[tfds]"' in msg and "mnist_cifar_subset" in msg

    monkeypatch.delenv("SBJAX_MNIST_CIFAR_DIR", raising=False)
    monkeypatch.setenv("SBJAX_MNIST_CIFAR_SUBSET", str(empty))
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
    with pytest.raises(DataNotFoundError) as e:
        load_mnist_cifar(source="auto")
    msg = str(e.value)
    assert "files: no folder given" in msg and "tfds:" in msg
    assert f"subset: no mnist01.npz and cifar10_auto_truck.npz in {empty}" in msg
    assert time.perf_counter() - t0 < 5.0  # no network, no retries


def test_half_present_files_name_the_missing_part(tmp_path):
    root = write_fixture(tmp_path / "half")
    for f in (root / "cifar-10-batches-py").iterdir():
        f.unlink()
    with pytest.raises(DataNotFoundError, match="CIFAR-10: looked for") as e:
        _load(root)
    assert "MNIST: looked for" not in str(e.value)


def test_auto_source_order_and_env(files_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SBJAX_MNIST_CIFAR_DIR", str(files_dir))
    assert load_mnist_cifar(source="auto").source == "files"
    # A folder in the subset's npz layout is found by auto as the subset source.
    sub = tmp_path / "sub"
    sub.mkdir()
    ytr, yte = _labels(MNIST_TRAIN, OTHER_TRAIN, 0), _labels(MNIST_TEST, OTHER_TEST, 1)
    keep_tr, keep_te = np.isin(ytr, (0, 1)), np.isin(yte, (0, 1))
    np.savez(
        sub / "mnist01.npz",
        train_x=_mnist_images(ytr)[keep_tr],
        train_y=ytr[keep_tr],
        train_idx=np.flatnonzero(keep_tr).astype(np.int32),
        test_x=_mnist_images(yte)[keep_te],
        test_y=yte[keep_te],
        test_idx=np.flatnonzero(keep_te).astype(np.int32),
    )
    cx, cy, src = [], [], []
    for b, (x, y) in enumerate(_cifar_train_batches(), start=1):
        k = np.isin(y, (1, 9))
        cx.append(x[k]), cy.append(y[k]), src.append(np.c_[np.full(k.sum(), b), np.flatnonzero(k)])
    yt = _labels(CIFAR_TEST, OTHER_TEST, 3)
    kt = np.isin(yt, (1, 9))
    np.savez(
        sub / "cifar10_auto_truck.npz",
        train_x=np.concatenate(cx),
        train_y=np.concatenate(cy),
        train_src=np.concatenate(src).astype(np.int32),
        test_x=_cifar_images(yt, 0)[kt],
        test_y=yt[kt],
        test_src=np.c_[np.ones(kt.sum()), np.flatnonzero(kt)].astype(np.int32),
    )
    s = load_mnist_cifar(source="auto", data_dir=sub, seed=5)
    f = load_mnist_cifar(source="files", data_dir=files_dir, seed=5)
    assert s.source == "subset"
    # Same images, same provenance indices -> same pool sizes and the same pixels per index.
    assert s.pool_sizes == f.pool_sizes
    np.testing.assert_array_equal(decode(s.train)["mnist_row"], s.train.mnist_index)
    np.testing.assert_array_equal(decode(s.train)["cifar_index"], s.train.cifar_index)


def test_tfds_not_installed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install "sbjax\[tfds\]"'):
        load_mnist_cifar(source="tfds", data_dir=tmp_path)


def _tfds_examples(name: str, split: str) -> list[dict]:
    if name == "mnist":
        y = _labels(
            *((MNIST_TRAIN, OTHER_TRAIN, 0) if split == "train" else (MNIST_TEST, OTHER_TEST, 1))
        )
        return [
            {"image": im[..., None], "label": np.int64(c)}
            for im, c in zip(_mnist_images(y), y, strict=True)
        ]
    if split == "train":
        batches = _cifar_train_batches()
        x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    else:
        y = _labels(CIFAR_TEST, OTHER_TEST, 3)
        x = _cifar_images(y, 0)
    return [
        {"image": im, "label": np.int64(c), "id": f"{split}_{i}"}
        for i, (im, c) in enumerate(zip(x, y, strict=True))
    ]


def test_tfds_adapter_with_a_fake_module(monkeypatch, tmp_path):
    """API plumbing of the tfds source without tensorflow-datasets: nothing prepared, no fetch."""
    calls = []

    class Builder:
        def __init__(self, name, data_dir):
            self.name, self.data_dir = name, f"{data_dir}/{name}/1.0.0"

        def is_prepared(self):
            return False

    def data_source(name, split, data_dir=None, download=True, **kw):
        calls.append((name, split, data_dir, download))
        if data_dir == "nothing":
            raise AssertionError("could not find data")
        return _tfds_examples(name, split)

    fake = types.SimpleNamespace(
        builder=lambda name, data_dir=None: Builder(name, data_dir), data_source=data_source
    )
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    d = load_mnist_cifar(source="tfds", data_dir=str(tmp_path), seed=1)
    assert d.source == "tfds" and d.sizes["train"] == 36 and d.sizes["test"] == 16
    assert all(c[3] is False for c in calls)  # never asked to download
    dec = decode(d.train)
    np.testing.assert_array_equal(dec["digit"], d.train.y)
    np.testing.assert_array_equal(dec["cifar_class"], np.where(d.train.y == 1, 9, 1))
    with pytest.raises(DataNotFoundError, match="tensorflow-datasets has no prepared 'mnist'"):
        load_mnist_cifar(source="tfds", data_dir="nothing")


def test_tfds_mock_data_plumbing(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    def fn(builder, split, *args, **kwargs):
        return _tfds_examples(builder.name, split)

    with tfds.testing.mock_data(as_data_source_fn=fn):
        d = load_mnist_cifar(source="tfds", data_dir=str(tmp_path))
    assert d.source == "tfds" and d.sizes["train"] == 36
    np.testing.assert_array_equal(decode(d.test)["digit"], d.test.y)
    t0 = time.perf_counter()
    with pytest.raises(DataNotFoundError):  # real tfds, nothing prepared: fails at once
        load_mnist_cifar(source="tfds", data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10.0


# --------------------------------------------------------------------------------------------------
# Helpers


def test_mnist_block_mask_and_blocks():
    m = mnist_block_mask()
    assert m.shape == IMAGE_SHAPE and m.sum() == 32 * 32 * 3 and m[:32].all() and not m[32:].any()
    dm = mnist_block_mask((5, 64, 32, 3), digit_only=True)
    assert dm.shape == (5, 64, 32, 3) and dm.sum() == 5 * 28 * 28 * 3
    assert dm[:, 2:30, 2:30].all() and not dm[:, :2].any() and not dm[:, :, 30:].any()
    with pytest.raises(ValueError, match="^shape="):
        mnist_block_mask((32, 32, 3))
    x = np.arange(2 * 64 * 32 * 3).reshape(2, 64, 32, 3)
    np.testing.assert_array_equal(mc.block(x, "cifar"), x[:, 32:])
    split = mc.Split(x.astype(np.float32), np.zeros(2, np.int32), np.arange(2), np.arange(2))
    assert mc.cifar_only(split).x.shape == (2, 32, 32, 3)


# --------------------------------------------------------------------------------------------------
# The real subset (skipped when absent)

needs_subset = pytest.mark.skipif(not SUBSET_DIR.is_dir(), reason=f"{SUBSET_DIR} not present")


@pytest.fixture(scope="module")
def real():
    return load_mnist_cifar(source="subset", data_dir=SUBSET_DIR, seed=0)


def _brightness_auc(split) -> float:
    from sklearn.metrics import roc_auc_score

    # On real MNIST a "0" has far more ink than a "1": the MNIST block's brightness ranks them.
    return float(roc_auc_score(split.y == 0, split.x[:, MNIST_ROWS].mean(axis=(1, 2, 3))))


@needs_subset
def test_real_subset_sizes_and_pools(real):
    assert real.source == "subset" and not real.complete
    assert real.sizes == {
        "train": 1018,
        "test": 186,
        "test_mnist_randomized": 186,
        "test_cifar_randomized": 202,
    }
    assert real.pool_sizes["train"] == (1732, 1981, 529, 509)
    assert real.pool_sizes["test"] == (980, 1135, 93, 110)
    for s in real.sets().values():
        assert s.x.shape[1:] == IMAGE_SHAPE and 0.0 <= s.x.min() and s.x.max() <= 1.0
        assert len(np.unique(s.mnist_index)) == len(np.unique(s.cifar_index)) == len(s)
        assert s.x[:, :2].max() == 0.0 and s.x[:, 30:32].max() == 0.0  # MNIST padding


@needs_subset
def test_real_subset_mnist_block_separates_only_when_label_determined(real):
    assert _brightness_auc(real.train) > 0.95
    assert _brightness_auc(real.test) > 0.95
    assert _brightness_auc(real.test_cifar_randomized) > 0.95
    assert abs(_brightness_auc(real.test_mnist_randomized) - 0.5) < 0.1


@needs_subset
def test_real_subset_only_has_version_a():
    with pytest.raises(ValueError, match="^version='C'"):
        load_mnist_cifar(version="C", source="subset", data_dir=SUBSET_DIR)


@needs_subset
def test_real_subset_indices_point_at_the_original_images(real):
    with np.load(SUBSET_DIR / "mnist01.npz") as z:
        by_idx = {v: i for i, v in enumerate(z["test_idx"].tolist())}
        img = z["test_x"][[by_idx[i] for i in real.test.mnist_index[:20]]]
    np.testing.assert_array_equal(
        np.rint(real.test.x[:20, 2:30, 2:30, 0] * 255).astype(np.uint8), img
    )
