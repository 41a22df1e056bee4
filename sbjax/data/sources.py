"""Readers for the standard MNIST and CIFAR-10 distribution files, with checksum verification.

Plain NumPy (no TensorFlow, no network): MNIST IDX files (gzipped or not, and Keras' `mnist.npz`),
CIFAR-10 python-pickle batches (`cifar-10-batches-py/`), binary batches (`cifar-10-batches-bin/`)
and the two published CIFAR-10 tarballs, read without extracting them. Each reader also has a writer
(`write_idx`, `write_cifar_python_batch`, `write_cifar_binary_batch`) so tests and examples can make
tiny files in the real formats.

Verification policy (`verify=`; the published sha256 values are those of `DATA.md` §5):

* ``"auto"`` (default): a file with a published checksum that matches is accepted silently. A file
  that does not match, or has no published checksum (extracted CIFAR batches, uncompressed IDX
  files), is parsed and judged by its content: a malformed file raises `CorruptDataError`; a
  well-formed file with *fewer* examples than the standard one is a recognised subset (a
  `SubsetWarning`, and loading goes on); a well-formed file of the *full* standard size whose
  checksum or known content facts (label counts, first labels) disagree raises
  `ChecksumMismatchError` (it claims to be the published file but is not).
* ``"strict"``: every file must match its published checksum; files without one (extracted batches,
  uncompressed IDX) are refused.
* ``"warn"``: mismatches only warn; malformed files still raise.
* ``"off"``: no hashing; malformed files still raise.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import logging
import pickle
import re
import tarfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sbjax.validate import check_choice

logger = logging.getLogger(__name__)

VERIFY_MODES = ("auto", "strict", "warn", "off")


# --------------------------------------------------------------------------------------------------
# Errors and warnings


class DataNotFoundError(FileNotFoundError):
    """The requested data are not at any of the places looked at (the message names them all)."""


class CorruptDataError(ValueError):
    """A data file exists but is malformed or is not what it claims to be."""


class ChecksumMismatchError(CorruptDataError):
    """A file's sha256 (or a known content fact) differs from the published one."""


class SubsetWarning(UserWarning):
    """The files are well formed but hold only part of the standard data (for example a subset)."""


# --------------------------------------------------------------------------------------------------
# Published facts (DATA.md §5)


@dataclasses.dataclass(frozen=True)
class PublishedFile:
    """A standard distribution file: its name, size in bytes and sha256."""

    name: str
    size: int
    sha256: str


MNIST_GZ_FILES = {
    "train_images": PublishedFile(
        "train-images-idx3-ubyte.gz",
        9_912_422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train_labels": PublishedFile(
        "train-labels-idx1-ubyte.gz",
        28_881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "test_images": PublishedFile(
        "t10k-images-idx3-ubyte.gz",
        1_648_877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "test_labels": PublishedFile(
        "t10k-labels-idx1-ubyte.gz",
        4_542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
MNIST_KERAS_NPZ = PublishedFile(
    "mnist.npz", 11_490_434, "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
)
CIFAR_PYTHON_TAR = PublishedFile(
    "cifar-10-python.tar.gz",
    170_498_071,
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
CIFAR_BINARY_TAR = PublishedFile(
    "cifar-10-binary.tar.gz",
    170_052_171,
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)
PUBLISHED_SHA256 = {
    f.name: f.sha256
    for f in (*MNIST_GZ_FILES.values(), MNIST_KERAS_NPZ, CIFAR_PYTHON_TAR, CIFAR_BINARY_TAR)
}

# Standard sizes and known content facts, used to tell a subset from a corrupt full-size file.
MNIST_N = {"train": 60_000, "test": 10_000}
MNIST_DIGIT_COUNTS = {  # digits whose counts DATA.md §1.3 / §1.6 states
    "train": {0: 5_923, 1: 6_742, 4: 5_842},
    "test": {0: 980, 1: 1_135, 4: 982},
}
CIFAR_BATCH_N = 10_000
CIFAR_TRAIN_BATCHES = 5
CIFAR_PER_CLASS = {"train": 5_000, "test": 1_000}
CIFAR_BATCH1_FIRST_LABELS = (6, 9, 9, 4, 1)
CIFAR_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digest_status(path: Path, published: PublishedFile | None, verify: str) -> str:
    """'verified' | 'mismatch' | 'unpublished' (no checksum known) | 'skipped' (verify='off')."""
    if verify == "off":
        return "skipped"
    if published is None:
        if verify == "strict":
            raise ChecksumMismatchError(
                f"{path}: no published checksum exists for this file, so verify='strict' refuses "
                "it; "
                "use the published archives (MNIST *.gz, cifar-10-*.tar.gz) or verify='auto'"
            )
        return "unpublished"
    got = sha256_file(path)
    if got == published.sha256:
        logger.debug("%s: sha256 verified", path)
        return "verified"
    if verify == "strict":
        raise ChecksumMismatchError(
            f"{path}: sha256 {got} differs from the published {published.sha256} of "
            f"{published.name} (verify='strict')"
        )
    return "mismatch"


def _combine(*statuses: str) -> str:
    """The status of a split read from several files: the weakest one."""
    for s in ("mismatch", "unpublished", "skipped"):
        if s in statuses:
            return s
    return "verified"


def _judge(
    path: Path | str,
    status: str,
    n_found: int,
    n_standard: int,
    verify: str,
    facts_ok: bool = True,
    what: str = "examples",
) -> bool:
    """Applies the verification policy to a parsed file; returns True if it holds the full data."""
    if status == "verified":
        return True
    full = n_found == n_standard
    if n_found > n_standard:
        raise CorruptDataError(f"{path}: {n_found} {what}, more than the standard {n_standard}")
    bad = (status == "mismatch" and full) or (full and not facts_ok)
    if bad and verify in ("auto", "strict"):
        why = (
            "its sha256 differs from the published one"
            if status == "mismatch"
            else "its content differs from the published file's known facts (label counts)"
        )
        raise ChecksumMismatchError(
            f"{path}: has the full standard size ({n_standard} {what}) but {why}: the file is "
            "corrupt or modified. Re-download it, or pass verify='warn' to use it anyway."
        )
    if not full:
        warnings.warn(
            f"{path}: {n_found} {what} instead of the standard {n_standard}; using it as a subset",
            SubsetWarning,
            stacklevel=3,
        )
    elif status == "mismatch" or not facts_ok:
        warnings.warn(
            f"{path}: does not match the published file; used anyway (verify={verify!r})",
            SubsetWarning,
            stacklevel=3,
        )
    return full


# --------------------------------------------------------------------------------------------------
# IDX (MNIST)

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CorruptDataError(f"{path}: damaged gzip stream ({e})") from e
    if path.suffix == ".gz":
        raise CorruptDataError(f"{path}: named .gz but is not gzip data")
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parses the bytes of an (uncompressed) IDX file.

    Args:
      data: file content: magic (two zero bytes, a dtype code, the number of dimensions), then one
        big-endian uint32 per dimension, then the values.
      name: used in error messages.

    Returns:
      The array, e.g. uint8 [n, 28, 28] for MNIST images, uint8 [n] for labels (native byte order).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise CorruptDataError(f"{name}: not an IDX file (magic bytes {data[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise CorruptDataError(f"{name}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise CorruptDataError(
            f"{name}: IDX header declares shape {dims} ({expected} bytes of data) but the file has "
            f"{len(data) - header}; the file is truncated or damaged"
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file, gzipped (`*.gz`) or not. See `parse_idx`."""
    path = Path(path)
    return parse_idx(_read_maybe_gzip(path), str(path))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Writes `array` as an IDX file (gzipped if the name ends in .gz). For tests and examples."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder(">") if v.itemsize > 1 else v: k for k, v in _IDX_DTYPES.items()}
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in codes:
        raise ValueError(f"array.dtype={array.dtype} is invalid: expected one of the IDX dtypes")
    header = bytes([0, 0, codes[big], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(array, big).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------
# CIFAR-10 batches

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch contains (dicts, lists, bytes, NumPy arrays).

    Pickle can run arbitrary code; a downloaded batch file must not be able to.
    """

    _NUMPY = {"_reconstruct": _np_multiarray._reconstruct, "scalar": _np_multiarray.scalar}

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in self._NUMPY:
            return self._NUMPY[name]
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")):
            return super().find_class(module, name)
        raise CorruptDataError(
            f"pickle refers to {module}.{name}, which a CIFAR-10 batch never contains; refused"
        )


def _chw_rows_to_nhwc(rows: np.ndarray) -> np.ndarray:
    # A CIFAR row is 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CorruptDataError(f"{name}: labels outside 0..9")
    return labels.astype(np.int64)


def parse_cifar_python_batch(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parses a CIFAR-10 python batch (a pickled dict with b"data" uint8 [n, 3072], b"labels").

    Returns:
      (x, y): x uint8 [n, 32, 32, 3] NHWC, y int64 [n] in 0..9.
    """
    try:
        d = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except CorruptDataError as e:
        raise CorruptDataError(f"{name}: {e}") from e
    except Exception as e:  # any unpickling failure means a damaged file
        raise CorruptDataError(f"{name}: not a readable CIFAR-10 python batch ({e!r})") from e
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise CorruptDataError(f"{name}: not a CIFAR-10 python batch (no b'data'/b'labels' keys)")
    x = np.asarray(d[b"data"])
    y = np.asarray(d[b"labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise CorruptDataError(
            f"{name}: b'data' {x.dtype} {x.shape} / b'labels' {y.shape}; "
            "expected uint8 [n, 3072], [n]"
        )
    return _chw_rows_to_nhwc(x), _check_labels(y, name)


def parse_cifar_binary_batch(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parses a CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (CHW).

    Returns:
      (x, y): x uint8 [n, 32, 32, 3] NHWC, y int64 [n] in 0..9.
    """
    if len(data) % 3073:
        raise CorruptDataError(
            f"{name}: {len(data)} bytes is not a whole number of 3073-byte CIFAR-10 records"
        )
    rec = np.frombuffer(data, np.uint8).reshape(-1, 3073)
    return _chw_rows_to_nhwc(rec[:, 1:]), _check_labels(rec[:, 0], name)


def read_cifar_python_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a CIFAR-10 python batch file. See `parse_cifar_python_batch`."""
    return parse_cifar_python_batch(Path(path).read_bytes(), str(path))


def read_cifar_binary_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a CIFAR-10 binary batch file (`data_batch_1.bin`, ...); see `parse_cifar_binary_batch`.

    Returns:
      (x, y): x uint8 [n, 32, 32, 3] NHWC, y int64 [n] in 0..9.
    """
    return parse_cifar_binary_batch(Path(path).read_bytes(), str(path))


def write_cifar_python_batch(path: str | Path, x: np.ndarray, y: Sequence[int]) -> Path:
    """Writes x uint8 [n, 32, 32, 3] NHWC and labels as a CIFAR-10 python batch (protocol 2)."""
    x = np.asarray(x, np.uint8)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    d = {
        b"batch_label": b"synthetic batch",
        b"labels": [int(v) for v in y],
        b"data": np.ascontiguousarray(rows),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(x))],
    }
    path = Path(path)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return path


def write_cifar_binary_batch(path: str | Path, x: np.ndarray, y: Sequence[int]) -> Path:
    """Writes x uint8 [n, 32, 32, 3] NHWC and labels as a CIFAR-10 binary batch."""
    x = np.asarray(x, np.uint8)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    rec = np.concatenate([np.asarray(y, np.uint8)[:, None], rows], axis=1)
    path = Path(path)
    path.write_bytes(rec.tobytes())
    return path


# --------------------------------------------------------------------------------------------------
# Whole datasets from a folder


@dataclasses.dataclass(frozen=True)
class ImageSplit:
    """One split of a source dataset.

    Attributes:
      x: uint8 [n, 28, 28] (MNIST) or [n, 32, 32, 3] NHWC (CIFAR-10).
      y: int64 [n], class labels 0..9.
      index: int64 [n], each image's index in the source's split (MNIST: row of the IDX file;
        CIFAR-10 train: 10000 * (batch - 1) + row; CIFAR-10 test: row of `test_batch`).
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def select(self, classes: Sequence[int]) -> ImageSplit:
        keep = np.isin(self.y, np.asarray(classes))
        return ImageSplit(self.x[keep], self.y[keep], self.index[keep])


@dataclasses.dataclass(frozen=True)
class SourceDataset:
    """Train and test splits of MNIST or CIFAR-10 as read from one location.

    Attributes:
      train, test: the splits.
      location: the files or folder read.
      complete: True if every file is the published one (or holds the full standard data).
    """

    train: ImageSplit
    test: ImageSplit
    location: str
    complete: bool


MNIST_DIR_CANDIDATES = (".", "mnist", "MNIST/raw", "MNIST")
CIFAR_DIR_CANDIDATES = (".", "cifar10", "cifar-10", "CIFAR10")
# Uncompressed IDX names as distributed, and the dotted variant some mirrors use.
_MNIST_ALT_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _subdirs(folder: Path, candidates: Sequence[str]) -> list[Path]:
    return [folder / c if c != "." else folder for c in candidates]


def describe_mnist_search(folder: str | Path) -> str:
    """Human-readable list of where `load_mnist_folder` looks."""
    dirs = ", ".join(str(d) for d in _subdirs(Path(folder), MNIST_DIR_CANDIDATES))
    names = ", ".join(f.name for f in MNIST_GZ_FILES.values())
    return f"{names} (or uncompressed, or mnist.npz) in {dirs}"


def describe_cifar_search(folder: str | Path) -> str:
    """Human-readable list of where `load_cifar_folder` looks."""
    dirs = ", ".join(str(d) for d in _subdirs(Path(folder), CIFAR_DIR_CANDIDATES))
    return (
        "cifar-10-python.tar.gz, cifar-10-binary.tar.gz, cifar-10-batches-py/ (data_batch_1..5, "
        f"test_batch) or cifar-10-batches-bin/ (*.bin) in {dirs}"
    )


def _check_mnist_split(
    split: str, x: np.ndarray, y: np.ndarray, where: str, status: str, verify: str
) -> bool:
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise CorruptDataError(
            f"{where}: MNIST images {x.dtype} {x.shape}; expected uint8 [n, 28, 28]"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise CorruptDataError(f"{where}: {len(y)} labels for {len(x)} images")
    _check_labels(y, where)
    counts = np.bincount(y.astype(np.int64), minlength=10)
    facts_ok = all(counts[d] == c for d, c in MNIST_DIGIT_COUNTS[split].items())
    return _judge(where, status, len(y), MNIST_N[split], verify, facts_ok, "images")


def load_mnist_folder(folder: str | Path, verify: str = "auto") -> SourceDataset | None:
    """Reads MNIST from the standard files in `folder` (see `describe_mnist_search`).

    Returns:
      The dataset, or None if no complete set of files (all four IDX files, or mnist.npz) is there.

    Raises:
      CorruptDataError / ChecksumMismatchError: per the module's verification policy.
    """
    check_choice("verify", verify, VERIFY_MODES)
    for d in _subdirs(Path(folder), MNIST_DIR_CANDIDATES):
        found: dict[str, tuple[Path, PublishedFile | None]] = {}
        for key, pub in MNIST_GZ_FILES.items():
            for name, p in [(pub.name, pub), *((n, None) for n in _MNIST_ALT_NAMES[key])]:
                if (d / name).is_file():
                    found[key] = (d / name, p)
                    break
        if len(found) == 4:
            arrays, statuses = {}, {}
            for key, (path, pub) in found.items():
                statuses[key] = _digest_status(path, pub, verify)
                arrays[key] = read_idx(path)
            complete = True
            for split in ("train", "test"):
                status = _combine(statuses[f"{split}_images"], statuses[f"{split}_labels"])
                where = f"{found[f'{split}_images'][0]} + {found[f'{split}_labels'][0].name}"
                x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
                complete &= _check_mnist_split(split, x, y, where, status, verify)
            splits = {
                s: ImageSplit(
                    arrays[f"{s}_images"],
                    arrays[f"{s}_labels"].astype(np.int64),
                    np.arange(len(arrays[f"{s}_labels"]), dtype=np.int64),
                )
                for s in ("train", "test")
            }
            return SourceDataset(splits["train"], splits["test"], str(d), complete)
        if found:
            missing = sorted(MNIST_GZ_FILES[k].name for k in MNIST_GZ_FILES if k not in found)
            logger.warning("%s: incomplete MNIST files (missing %s)", d, ", ".join(missing))
        npz = d / MNIST_KERAS_NPZ.name
        if npz.is_file():
            status = _digest_status(npz, MNIST_KERAS_NPZ, verify)
            try:
                with np.load(npz, allow_pickle=False) as z:
                    arr = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            except Exception as e:
                raise CorruptDataError(f"{npz}: not a readable Keras mnist.npz ({e!r})") from e
            complete = True
            for s in ("train", "test"):
                complete &= _check_mnist_split(
                    s, arr[f"x_{s}"], arr[f"y_{s}"], str(npz), status, verify
                )
            splits = {
                s: ImageSplit(
                    arr[f"x_{s}"],
                    arr[f"y_{s}"].astype(np.int64),
                    np.arange(len(arr[f"y_{s}"]), dtype=np.int64),
                )
                for s in ("train", "test")
            }
            return SourceDataset(splits["train"], splits["test"], str(npz), complete)
    return None


_BATCH_RE = re.compile(r"(?:^|/)(data_batch_([1-5])|test_batch)(\.bin)?$")


def _cifar_batches_from_tar(path: Path) -> dict[str, tuple[bytes, bool]]:
    out = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar.getmembers():
                match = _BATCH_RE.search(m.name)
                if m.isfile() and match:
                    f = tar.extractfile(m)
                    out[match.group(1)] = (f.read(), match.group(3) is not None)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise CorruptDataError(f"{path}: damaged tar.gz archive ({e})") from e
    return out


def _cifar_batches_from_dir(d: Path, binary: bool) -> dict[str, tuple[bytes, bool]]:
    suffix = ".bin" if binary else ""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        n: ((d / (n + suffix)).read_bytes(), binary) for n in names if (d / (n + suffix)).is_file()
    }


def _assemble_cifar(
    batches: dict[str, tuple[bytes, bool]], where: str, status: str, verify: str
) -> SourceDataset:
    xs, ys, idx = [], [], []
    complete = status == "verified"
    train_full = True
    for b in range(1, CIFAR_TRAIN_BATCHES + 1):
        name = f"data_batch_{b}"
        if name not in batches:
            train_full = False
            continue
        data, binary = batches[name]
        x, y = (parse_cifar_binary_batch if binary else parse_cifar_python_batch)(data, name)
        if b == 1 and len(y) == CIFAR_BATCH_N:
            facts_ok = tuple(y[:5]) == CIFAR_BATCH1_FIRST_LABELS
        else:
            facts_ok = True
        train_full &= _judge(f"{where}/{name}", status, len(y), CIFAR_BATCH_N, verify, facts_ok)
        xs.append(x), ys.append(y), idx.append(CIFAR_BATCH_N * (b - 1) + np.arange(len(y)))
    if "test_batch" not in batches or not xs:
        raise DataNotFoundError(f"{where}: no CIFAR-10 {'test_batch' if xs else 'data_batch_*'}")
    if not train_full and status != "verified":
        warnings.warn(
            f"{where}: some CIFAR-10 training batches are missing or partial; using "
            "them as a subset",
            SubsetWarning,
            stacklevel=3,
        )
    data, binary = batches["test_batch"]
    tx, ty = (parse_cifar_binary_batch if binary else parse_cifar_python_batch)(data, "test_batch")
    facts_ok = len(ty) != CIFAR_BATCH_N or bool(
        np.all(np.bincount(ty, minlength=10) == CIFAR_PER_CLASS["test"])
    )
    test_full = _judge(f"{where}/test_batch", status, len(ty), CIFAR_BATCH_N, verify, facts_ok)
    train = ImageSplit(np.concatenate(xs), np.concatenate(ys), np.concatenate(idx).astype(np.int64))
    if train_full and status != "verified":
        counts = np.bincount(train.y, minlength=10)
        if np.any(counts != CIFAR_PER_CLASS["train"]):
            _judge(f"{where} (train)", status, len(train), 50_000, verify, False)
    test = ImageSplit(tx, ty, np.arange(len(ty), dtype=np.int64))
    return SourceDataset(train, test, where, complete or (train_full and test_full))


def load_cifar_folder(folder: str | Path, verify: str = "auto") -> SourceDataset | None:
    """Reads CIFAR-10 from the standard files in `folder` (see `describe_cifar_search`).

    Order: the published tarballs (checksum-verifiable) first, then extracted python batches, then
    extracted binary batches.

    Returns:
      The dataset, or None if no CIFAR-10 files are there.

    Raises:
      CorruptDataError / ChecksumMismatchError: per the module's verification policy.
    """
    check_choice("verify", verify, VERIFY_MODES)
    for d in _subdirs(Path(folder), CIFAR_DIR_CANDIDATES):
        for pub in (CIFAR_PYTHON_TAR, CIFAR_BINARY_TAR):
            if (d / pub.name).is_file():
                status = _digest_status(d / pub.name, pub, verify)
                batches = _cifar_batches_from_tar(d / pub.name)
                return _assemble_cifar(batches, str(d / pub.name), status, verify)
        for sub, binary in (("cifar-10-batches-py", False), ("cifar-10-batches-bin", True)):
            if (d / sub).is_dir():
                batches = _cifar_batches_from_dir(d / sub, binary)
                if batches:
                    status = _digest_status(d / sub, None, verify)
                    return _assemble_cifar(batches, str(d / sub), status, verify)
    return None


# --------------------------------------------------------------------------------------------------
# tensorflow-datasets (optional)

TFDS_INSTALL_HINT = (
    'pip install "sbjax[tfds]"  (tensorflow-datasets, importlib_resources, etils[epath]); '
    "preparing "
    "the data once also needs tensorflow-cpu and pillow, or use the local-files source instead"
)


def import_tfds():
    """Imports tensorflow_datasets lazily; raises ImportError with the install command if absent."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"tensorflow-datasets is not installed: {TFDS_INSTALL_HINT}") from e
    return tfds


def _tfds_split_arrays(tfds, name: str, split: str, data_dir, allow_download: bool):
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        try:
            return builder.as_data_source(split=split)
        except NotImplementedError:
            # Prepared as TFRecord (the tfds default): only tf.data can read it.
            try:
                import tensorflow  # noqa: F401
            except ImportError as e:
                raise DataNotFoundError(
                    f"tensorflow-datasets: {name!r} at {builder.data_dir} is prepared as TFRecord, "
                    "which needs TensorFlow to read (pip install tensorflow-cpu), or prepare it "
                    "with file_format='array_record'"
                ) from e
            return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    if allow_download:
        logger.info("tensorflow-datasets: downloading and preparing %r (allow_download=True)", name)
        return tfds.data_source(
            name,
            split=split,
            data_dir=data_dir,
            download=True,
            builder_kwargs={"file_format": "array_record"},
        )
    try:
        # download=False fails in milliseconds when nothing is prepared (download=True would retry
        # for minutes offline). This is also the call that tfds.testing.mock_data intercepts.
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:
        raise DataNotFoundError(
            f"tensorflow-datasets has no prepared {name!r} data at {builder.data_dir} "
            f"({type(e).__name__})"
        ) from e


def load_tfds_dataset(
    name: str, data_dir: str | Path | None = None, allow_download: bool = False
) -> SourceDataset:
    """Loads 'mnist' or 'cifar10' through tensorflow-datasets, never downloading unless asked.

    Args:
      name: "mnist" or "cifar10".
      data_dir: tfds data folder (default: tfds' own, i.e. $TFDS_DATA_DIR or ~/tensorflow_datasets).
      allow_download: let tfds download and prepare the data (needs network, TensorFlow, Pillow).

    Returns:
      The dataset; `index` is the position in tfds' split order (not the original file's row).
    """
    check_choice("name", name, ("mnist", "cifar10"))
    tfds = import_tfds()
    splits = {}
    for split in ("train", "test"):
        src = _tfds_split_arrays(
            tfds, name, split, None if data_dir is None else str(data_dir), allow_download
        )
        if isinstance(src, dict):  # tf.data path, batch_size=-1: already whole arrays
            x, y = np.asarray(src["image"]), np.asarray(src["label"])
        else:
            examples = [src[i] for i in range(len(src))]
            x = np.stack([np.asarray(e["image"]) for e in examples]) if examples else np.zeros(0)
            y = np.asarray([int(e["label"]) for e in examples], np.int64)
        x = x.astype(np.uint8)
        if name == "mnist" and x.ndim == 4:
            x = x[..., 0]
        splits[split] = ImageSplit(x, _check_labels(y, name), np.arange(len(y), dtype=np.int64))
    n_std = MNIST_N if name == "mnist" else {"train": 50_000, "test": 10_000}
    complete = all(len(splits[s]) == n_std[s] for s in splits)
    if not complete:
        warnings.warn(
            f"tensorflow-datasets {name!r}: {len(splits['train'])} train / {len(splits['test'])} "
            "test images, fewer than the standard; using them as a subset",
            SubsetWarning,
            stacklevel=2,
        )
    where = f"tensorflow-datasets {name!r} (data_dir={data_dir or 'tfds default'})"
    return SourceDataset(splits["train"], splits["test"], where, complete)
