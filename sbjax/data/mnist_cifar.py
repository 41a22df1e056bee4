"""MNIST-CIFAR: an MNIST digit stacked on a CIFAR-10 image (Shah et al. 2020, Sec. 3.1, App. B).

Each image is float32 [64, 32, 3] NHWC in [0, 1]: rows 0-31 hold the MNIST digit zero-padded from
28x28 to 32x32 and repeated over the 3 channels (`MNIST_ROWS`; the original pixels are rows and
columns 2-29), rows 32-63 the CIFAR-10 image (`CIFAR_ROWS`). No normalisation, no augmentation.
Labels are int32 in {0, 1} (class 0 = the paper's -1).

| version | label 0: MNIST / CIFAR-10 | label 1: MNIST / CIFAR-10 |
|---|---|---|
| A (paper, default) | digit 0 / automobile | digit 1 / truck |
| B | digit 1 / automobile | digit 4 / truck |
| C | digit 0 / airplane | digit 1 / ship |

Pairing (the reference implementation's rule, `DATA.md` §1.2): split MNIST and CIFAR-10 into a
label-0 and a label-1 pool each, shuffle the four pools, cut all of them to the smallest size n,
stack MNIST_pool[i] on CIFAR_pool[i] within each label, shuffle the whole set. No image is used
twice, so the full data give 10,000 train / 1,960 test images for version A (the paper states
50,000 / 10,000, which needs reuse: `allow_reuse=True` with `n_train`, `n_test`).

Randomised evaluation sets (`DATA.md` §1.4, `REFERENCE.md` §4.4): by default separately built,
freshly paired sets in which one source is split *randomly in half* instead of by label, so that
block is independent of the label while the other block still determines it. MNIST-randomised
test has 2,000 images on the full data, CIFAR-randomised test 1,960. The paper-style alternative
(`randomize_mode="permute_block"`, or `permute_block`) permutes one block across the rows of the
standard test set.

Usage:
    from sbjax.data.mnist_cifar import load_mnist_cifar
    data = load_mnist_cifar(version="A", source="auto", seed=0)
    x, y = data.train.x, data.train.y            # float32 [n, 64, 32, 3], int32 [n]
    data.test_mnist_randomized.x                  # MNIST block independent of the label

Sources (`source=`): "files" (the standard MNIST / CIFAR-10 distribution files in a folder, read
with NumPy and checked against the published checksums: `sbjax.data.sources`), "tfds"
(tensorflow-datasets, optional extra, never downloads unless `allow_download=True`), "subset" (the
partial real subset `mnist01.npz` + `cifar10_auto_truck.npz`), "auto" (see `load_mnist_cifar`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbjax.data import sources
from sbjax.data.sources import (
    ChecksumMismatchError,
    CorruptDataError,
    DataNotFoundError,
    ImageSplit,
    SourceDataset,
    SubsetWarning,
)
from sbjax.validate import check_choice, check_int, fail

__all__ = [
    "CIFAR_ROWS",
    "IMAGE_SHAPE",
    "MNIST_DIGIT_COLS",
    "MNIST_DIGIT_ROWS",
    "MNIST_ROWS",
    "REFERENCE_SIZES",
    "VERSIONS",
    "ChecksumMismatchError",
    "ClassPair",
    "CorruptDataError",
    "DataNotFoundError",
    "MnistCifar",
    "Split",
    "SubsetWarning",
    "block",
    "build_mnist_cifar",
    "cifar_only",
    "compose",
    "default_subset_dir",
    "load_mnist_cifar",
    "load_sources",
    "load_subset",
    "mnist_block_mask",
    "pair",
    "permute_block",
]

logger = logging.getLogger(__name__)

IMAGE_SHAPE = (64, 32, 3)
MNIST_ROWS = slice(0, 32)
CIFAR_ROWS = slice(32, 64)
MNIST_DIGIT_ROWS = slice(2, 30)  # where the original 28x28 digit lies inside the MNIST block
MNIST_DIGIT_COLS = slice(2, 30)

SOURCES = ("auto", "files", "tfds", "subset")
RANDOMIZE_MODES = ("rebuild", "permute_block")
ENV_FILES_DIR = "SBJAX_MNIST_CIFAR_DIR"
ENV_SUBSET_DIR = "SBJAX_MNIST_CIFAR_SUBSET"
SUBSET_FILES = {
    "mnist01.npz": "84272e6c94c2d9c2b9c30857b48b1de9fc7c51d77bd691e917b1ea0cc6ed08be",
    "cifar10_auto_truck.npz": "6221864399e5de8ac4e3c2d44de499bf9002b389147037ed98f5dd18cdd1e7c1",
}


@dataclasses.dataclass(frozen=True)
class ClassPair:
    """Source classes of each binary label (paper App. B, Table 3)."""

    mnist_neg: int
    mnist_pos: int
    cifar_neg: int
    cifar_pos: int

    @property
    def mnist(self) -> tuple[int, int]:
        return (self.mnist_neg, self.mnist_pos)

    @property
    def cifar(self) -> tuple[int, int]:
        return (self.cifar_neg, self.cifar_pos)


VERSIONS = {
    "A": ClassPair(mnist_neg=0, mnist_pos=1, cifar_neg=1, cifar_pos=9),
    "B": ClassPair(mnist_neg=1, mnist_pos=4, cifar_neg=1, cifar_pos=9),
    "C": ClassPair(mnist_neg=0, mnist_pos=1, cifar_neg=0, cifar_pos=8),
}

# Sizes the reference pairing gives on the full standard data (DATA.md §1.3-1.6).
REFERENCE_SIZES = {
    "A": {
        "train": 10_000,
        "test": 1_960,
        "test_mnist_randomized": 2_000,
        "test_cifar_randomized": 1_960,
    },
    "B": {"train": 10_000, "test": 1_964},
    "C": {"train": 10_000, "test": 1_960},
}

# Seed-stream ids: each set gets its own generator, so building one set never changes another.
_STREAMS = {
    "train": 0,
    "test": 1,
    "test_mnist_randomized": 2,
    "test_cifar_randomized": 3,
    "train_mnist_randomized": 4,
    "train_cifar_randomized": 5,
}


# --------------------------------------------------------------------------------------------------
# Image layout helpers


def compose(mnist_x: np.ndarray, cifar_x: np.ndarray) -> np.ndarray:
    """Stacks padded MNIST digits on top of CIFAR-10 images.

    Args:
      mnist_x: uint8 [n, 28, 28].
      cifar_x: uint8 [n, 32, 32, 3] NHWC.

    Returns:
      uint8 [n, 64, 32, 3]: rows 0-31 the digit padded by 2 on every side and repeated over the 3
      channels, rows 32-63 the CIFAR image.
    """
    mnist_x, cifar_x = np.asarray(mnist_x), np.asarray(cifar_x)
    if mnist_x.shape[1:] != (28, 28) or cifar_x.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"shapes {mnist_x.shape} / {cifar_x.shape}: expected [n,28,28] / [n,32,32,3]"
        )
    if len(mnist_x) != len(cifar_x):
        raise ValueError(f"{len(mnist_x)} MNIST images for {len(cifar_x)} CIFAR images")
    out = np.zeros((len(mnist_x), *IMAGE_SHAPE), np.uint8)
    out[:, MNIST_DIGIT_ROWS, MNIST_DIGIT_COLS, :] = mnist_x[..., None]
    out[:, CIFAR_ROWS] = cifar_x
    return out


def _rows(which: str) -> slice:
    check_choice("block", which, ("mnist", "cifar"))
    return MNIST_ROWS if which == "mnist" else CIFAR_ROWS


def block(x, which: str):
    """The MNIST or CIFAR block of images x [..., 64, 32, C] -> [..., 32, 32, C] (numpy or jax)."""
    return x[..., _rows(which), :, :]


def mnist_block_mask(shape: Sequence[int] = IMAGE_SHAPE, digit_only: bool = False) -> np.ndarray:
    """Boolean mask, True on the MNIST block (rows 0-31) of images of `shape`.

    Args:
      shape: (..., 64, 32, C); leading (batch) dimensions are allowed.
      digit_only: mark only the original 28x28 digit pixels (rows and columns 2-29), not the
        padding.

    Returns:
      bool array of `shape`. E.g. the fraction of a perturbation's squared norm on MNIST pixels is
      `(u[mask] ** 2).sum() / (u ** 2).sum()`.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or shape[-3:-1] != IMAGE_SHAPE[:2]:
        fail("shape", shape, "(..., 64, 32, C)")
    mask = np.zeros(shape, bool)
    if digit_only:
        mask[..., MNIST_DIGIT_ROWS, MNIST_DIGIT_COLS, :] = True
    else:
        mask[..., MNIST_ROWS, :, :] = True
    return mask


# --------------------------------------------------------------------------------------------------
# Splits and the dataset container


@dataclasses.dataclass(frozen=True)
class Split:
    """One MNIST-CIFAR set.

    Attributes:
      x: float32 [n, 64, 32, 3] in [0, 1] (or uint8 0..255 with dtype="uint8"); MNIST rows 0-31.
      y: int32 [n] in {0, 1}.
      mnist_index: int64 [n], each MNIST block's index in its source split (see `ImageSplit.index`).
      cifar_index: int64 [n], same for the CIFAR block.
    """

    x: np.ndarray
    y: np.ndarray
    mnist_index: np.ndarray
    cifar_index: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n(self) -> int:
        return len(self.y)


def cifar_only(split: Split) -> Split:
    """The CIFAR block alone, x [n, 32, 32, 3] (control: the CIFAR block is learnable alone)."""
    return dataclasses.replace(split, x=np.ascontiguousarray(block(split.x, "cifar")))


def _permutation(rng, n: int):
    if isinstance(rng, np.random.Generator):
        return rng.permutation(n)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng)).permutation(n)
    import jax  # a PRNG key: stay in JAX so the call can be jitted

    return jax.random.permutation(rng, n)


def permute_block(data, which: str, rng):
    """Randomises one block across examples by a row permutation (the paper-style randomisation).

    Args:
      data: a `Split`, or images [n, 64, 32, C] (numpy or jax array).
      which: "mnist" or "cifar".
      rng: an int seed, a numpy Generator, or a jax PRNG key (then the permutation is jax's and the
        function is jit-able for jax arrays).

    Returns:
      Same type as `data`; image i keeps its own other block and label and gets block `which` of
      image perm[i]. For a `Split` the matching index array is permuted too.
    """
    rows = _rows(which)
    x = data.x if isinstance(data, Split) else data
    perm = _permutation(rng, x.shape[0])
    if isinstance(x, np.ndarray):
        perm = np.asarray(perm)
        out = x.copy()
        out[:, rows] = x[perm, rows]
    else:
        out = x.at[:, rows].set(x[perm][:, rows])
    if not isinstance(data, Split):
        return out
    field = "mnist_index" if which == "mnist" else "cifar_index"
    return dataclasses.replace(data, x=out, **{field: getattr(data, field)[np.asarray(perm)]})


@dataclasses.dataclass(frozen=True)
class MnistCifar:
    """MNIST-CIFAR train / test sets with randomised evaluation sets and provenance.

    Attributes:
      train, test: the standard sets.
      test_mnist_randomized: MNIST block independent of the label (S-randomised; AUC -> 0.5 for a
        model that relies on MNIST only).
      test_cifar_randomized: CIFAR block independent of the label (S^c-randomised).
      train_mnist_randomized, train_cifar_randomized: built only with `randomized_train=True`.
      version: "A", "B" or "C"; classes: its `ClassPair`.
      source: "files", "tfds" or "subset"; location: what was read.
      complete: True if the source holds the full standard MNIST and CIFAR-10 data.
      seed: the pairing seed.
      pool_sizes: for each set, the four pool sizes before cutting (mnist_neg, mnist_pos,
        cifar_neg, cifar_pos).
      options: the remaining build options (n_train, n_test, allow_reuse, randomize_mode, dtype).
    """

    train: Split
    test: Split
    test_mnist_randomized: Split
    test_cifar_randomized: Split
    train_mnist_randomized: Split | None
    train_cifar_randomized: Split | None
    version: str
    classes: ClassPair
    source: str
    location: str
    complete: bool
    seed: int
    pool_sizes: dict[str, tuple[int, int, int, int]]
    options: dict[str, Any]

    def sets(self) -> dict[str, Split]:
        """All built sets by name."""
        names = (
            "train",
            "test",
            "test_mnist_randomized",
            "test_cifar_randomized",
            "train_mnist_randomized",
            "train_cifar_randomized",
        )
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @property
    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.sets().items()}

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-able description (for config.json / summary.json)."""
        return {
            "dataset": f"mnist_cifar_{self.version.lower()}",
            "version": self.version,
            "classes": dataclasses.asdict(self.classes),
            "source": self.source,
            "location": self.location,
            "complete": self.complete,
            "seed": self.seed,
            "sizes": self.sizes,
            "pool_sizes": {k: list(v) for k, v in self.pool_sizes.items()},
            **self.options,
        }


# --------------------------------------------------------------------------------------------------
# Pairing


def _draw(pool: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """First m of the (already shuffled) pool; with reuse, further fresh permutations appended."""
    if m <= len(pool):
        return pool[:m]
    reps = [pool] + [rng.permutation(pool) for _ in range(-(-m // len(pool)) - 1)]
    return np.concatenate(reps)[:m]


def pair(
    mnist: ImageSplit,
    cifar: ImageSplit,
    classes: ClassPair,
    rng: np.random.Generator,
    *,
    randomize: str | None = None,
    n: int | None = None,
    allow_reuse: bool = False,
    dtype: str = "float32",
    name: str = "n",
) -> tuple[Split, tuple[int, int, int, int]]:
    """Builds one MNIST-CIFAR set with the reference pairing rule.

    Args:
      mnist: MNIST split (x uint8 [N, 28, 28], y digits, index).
      cifar: CIFAR-10 split (x uint8 [M, 32, 32, 3], y classes, index).
      classes: the version's classes.
      rng: numpy Generator; all randomness comes from it.
      randomize: None (both blocks by label), "mnist" (the MNIST pool of both digit classes split
        randomly in half: the first floor(N/2) of a permutation form the label-0 pool, the rest the
        label-1 pool) or "cifar" (same for CIFAR).
      n: total size (even); default 2 * the smallest pool. Larger than that needs `allow_reuse`.
      allow_reuse: reuse images (each pool cycled through fresh permutations) to reach `n`.
      dtype: "float32" (x / 255) or "uint8".
      name: parameter name used in error messages for `n`.

    Returns:
      (split, pool_sizes): the shuffled set, and the four pool sizes before cutting
      (mnist_neg, mnist_pos, cifar_neg, cifar_pos).
    """
    check_choice("randomize", randomize, (None, "mnist", "cifar"))
    check_choice("dtype", dtype, ("float32", "uint8"))

    def pools(src: ImageSplit, neg: int, pos: int, random_halves: bool):
        if random_halves:
            perm = rng.permutation(np.flatnonzero(np.isin(src.y, (neg, pos))))
            return perm[: len(perm) // 2], perm[len(perm) // 2 :]
        return rng.permutation(np.flatnonzero(src.y == neg)), rng.permutation(
            np.flatnonzero(src.y == pos)
        )

    m_neg, m_pos = pools(mnist, *classes.mnist, randomize == "mnist")
    c_neg, c_pos = pools(cifar, *classes.cifar, randomize == "cifar")
    sizes = (len(m_neg), len(m_pos), len(c_neg), len(c_pos))
    smallest = min(sizes)
    if smallest == 0:
        raise ValueError(
            f"version classes {dataclasses.asdict(classes)} give an empty pool (pool sizes "
            f"mnist_neg, mnist_pos, cifar_neg, cifar_pos = {sizes}): the source does not contain "
            "these classes"
        )
    if n is None:
        m = smallest
    else:
        check_int(name, n, min_value=2)
        if n % 2:
            fail(name, n, "an even integer (half of the images per label)")
        m = n // 2
        if m > smallest and not allow_reuse:
            fail(
                name,
                n,
                f"an even integer <= {2 * smallest} (2 x the smallest class pool, pool "
                f"sizes {sizes}) without allow_reuse=True",
            )
    m_idx = [_draw(m_neg, m, rng), _draw(m_pos, m, rng)]
    c_idx = [_draw(c_neg, m, rng), _draw(c_pos, m, rng)]
    mi, ci = np.concatenate(m_idx), np.concatenate(c_idx)
    y = np.repeat(np.array([0, 1], np.int32), m)
    order = rng.permutation(2 * m)  # shuffle the whole set (until here label 0 comes first)
    mi, ci, y = mi[order], ci[order], y[order]
    x = compose(mnist.x[mi], cifar.x[ci])
    if dtype == "float32":
        x = x.astype(np.float32) / np.float32(255.0)
    split = Split(x=x, y=y, mnist_index=mnist.index[mi], cifar_index=cifar.index[ci])
    return split, sizes


def _select_classes(
    mnist: SourceDataset, cifar: SourceDataset, classes: ClassPair, version: str, source: str
) -> tuple[SourceDataset, SourceDataset]:
    """Both sources cut to the version's classes; fails naming `version` if a class is missing."""
    mnist = dataclasses.replace(
        mnist, train=mnist.train.select(classes.mnist), test=mnist.test.select(classes.mnist)
    )
    cifar = dataclasses.replace(
        cifar, train=cifar.train.select(classes.cifar), test=cifar.test.select(classes.cifar)
    )
    for src, cls, what in (
        (mnist, classes.mnist, "MNIST digits"),
        (cifar, classes.cifar, "CIFAR-10 classes"),
    ):
        for split in ("train", "test"):
            present = set(np.unique(getattr(src, split).y).tolist())
            if not set(cls) <= present:
                fail(
                    "version",
                    version,
                    f"a version whose {what} {cls} are in the {source} "
                    f"data ({split} split has {sorted(present)} of them, at {src.location})",
                )
    return mnist, cifar


def _pairing_plan(
    n_train: int | None, n_test: int | None, randomize_mode: str, randomized_train: bool
) -> list[tuple[str, str | None, str, int | None, str]]:
    """The sets `pair` builds: (name, randomize, source split, n, name of n) each."""
    plan = [("train", None, "train", n_train, "n_train"), ("test", None, "test", n_test, "n_test")]
    if randomize_mode == "rebuild":
        plan += [
            ("test_mnist_randomized", "mnist", "test", n_test, "n_test"),
            ("test_cifar_randomized", "cifar", "test", n_test, "n_test"),
        ]
    if randomized_train:
        plan += [
            ("train_mnist_randomized", "mnist", "train", n_train, "n_train"),
            ("train_cifar_randomized", "cifar", "train", n_train, "n_train"),
        ]
    return plan


def _add_permuted_blocks(
    built: dict[str, Split | None],
    pool_sizes: dict[str, tuple[int, int, int, int]],
    rng: Callable[[str], np.random.Generator],
    randomized_train: bool,
) -> None:
    """randomize_mode="permute_block": adds the block-permuted test (and train) sets in place."""
    for which in ("mnist", "cifar"):
        built[f"test_{which}_randomized"] = permute_block(
            built["test"], which, rng(f"test_{which}_randomized")
        )
        pool_sizes[f"test_{which}_randomized"] = pool_sizes["test"]
    if randomized_train:
        for which in ("mnist", "cifar"):
            name = f"train_{which}_randomized"
            built[name] = permute_block(built["train"], which, rng(name))
            pool_sizes[name] = pool_sizes["train"]


def build_mnist_cifar(
    mnist: SourceDataset,
    cifar: SourceDataset,
    *,
    version: str = "A",
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    allow_reuse: bool = False,
    randomize_mode: str = "rebuild",
    randomized_train: bool = False,
    dtype: str = "float32",
    source: str = "custom",
) -> MnistCifar:
    """Pairs already loaded MNIST and CIFAR-10 data into MNIST-CIFAR (see `load_mnist_cifar`)."""
    check_choice("version", version, tuple(VERSIONS))
    check_int("seed", seed, min_value=0)
    check_choice("randomize_mode", randomize_mode, RANDOMIZE_MODES)
    check_choice("dtype", dtype, ("float32", "uint8"))
    classes = VERSIONS[version]
    mnist, cifar = _select_classes(mnist, cifar, classes, version, source)

    def rng(name: str) -> np.random.Generator:
        return np.random.default_rng([seed, _STREAMS[name]])

    plan = _pairing_plan(n_train, n_test, randomize_mode, randomized_train)
    built: dict[str, Split | None] = {k: None for k in _STREAMS}
    pool_sizes = {}
    for name, randomize, split, n, n_name in plan:
        built[name], pool_sizes[name] = pair(
            getattr(mnist, split),
            getattr(cifar, split),
            classes,
            rng(name),
            randomize=randomize,
            n=n,
            allow_reuse=allow_reuse,
            dtype=dtype,
            name=n_name,
        )
    if randomize_mode == "permute_block":
        _add_permuted_blocks(built, pool_sizes, rng, randomized_train)
    location = (
        mnist.location
        if mnist.location == cifar.location
        else (f"{mnist.location} + {cifar.location}")
    )
    return MnistCifar(
        **built,
        version=version,
        classes=classes,
        source=source,
        location=location,
        complete=mnist.complete and cifar.complete,
        seed=int(seed),
        pool_sizes=pool_sizes,
        options={
            "n_train": n_train,
            "n_test": n_test,
            "allow_reuse": allow_reuse,
            "randomize_mode": randomize_mode,
            "dtype": dtype,
        },
    )


# --------------------------------------------------------------------------------------------------
# Sources


def default_subset_dir() -> Path:
    """`$SBJAX_MNIST_CIFAR_SUBSET`, else `<repo>/../shared/data/mnist_cifar_subset`."""
    env = os.environ.get(ENV_SUBSET_DIR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist_cifar_subset"


def load_subset(folder: str | Path | None = None) -> tuple[SourceDataset, SourceDataset] | None:
    """Reads the partial real subset (`mnist01.npz`, `cifar10_auto_truck.npz`; version A classes).

    Args:
      folder: the folder holding both files (default: `default_subset_dir()`).

    Returns:
      (mnist, cifar) source datasets, or None if the files are not there. `mnist.index` is the row
      in the original MNIST file; `cifar.index` is 10000 * (batch - 1) + row (train) or the row of
      `test_batch` (test).
    """
    folder = Path(folder).expanduser() if folder is not None else default_subset_dir()
    paths = {name: folder / name for name in SUBSET_FILES}
    if not all(p.is_file() for p in paths.values()):
        return None
    for name, p in paths.items():
        if sources.sha256_file(p) != SUBSET_FILES[name]:
            logger.info("%s differs from the shared subset; reading it as the same layout", p)
    try:
        with np.load(paths["mnist01.npz"], allow_pickle=False) as z:
            m = {
                k: z[k] for k in ("train_x", "train_y", "train_idx", "test_x", "test_y", "test_idx")
            }
        with np.load(paths["cifar10_auto_truck.npz"], allow_pickle=False) as z:
            c = {
                k: z[k] for k in ("train_x", "train_y", "train_src", "test_x", "test_y", "test_src")
            }
    except Exception as e:
        raise CorruptDataError(f"{folder}: unreadable subset npz files ({e!r})") from e
    for s in ("train", "test"):
        if m[f"{s}_x"].shape[1:] != (28, 28) or c[f"{s}_x"].shape[1:] != (32, 32, 3):
            raise CorruptDataError(f"{folder}: unexpected subset array shapes")
    c_index = {
        "train": sources.CIFAR_BATCH_N * (c["train_src"][:, 0].astype(np.int64) - 1)
        + c["train_src"][:, 1],
        "test": c["test_src"][:, 1].astype(np.int64),
    }
    mnist = SourceDataset(
        *(
            ImageSplit(m[f"{s}_x"], m[f"{s}_y"].astype(np.int64), m[f"{s}_idx"].astype(np.int64))
            for s in ("train", "test")
        ),
        location=str(folder),
        complete=False,
    )
    cifar = SourceDataset(
        *(
            ImageSplit(c[f"{s}_x"], c[f"{s}_y"].astype(np.int64), c_index[s])
            for s in ("train", "test")
        ),
        location=str(folder),
        complete=False,
    )
    return mnist, cifar


def _load_files(folder: Path, verify: str) -> tuple[SourceDataset, SourceDataset] | str:
    """The datasets, or a line saying what is missing."""
    mnist = sources.load_mnist_folder(folder, verify)
    cifar = sources.load_cifar_folder(folder, verify)
    if mnist is not None and cifar is not None:
        return mnist, cifar
    missing = []
    if mnist is None:
        missing.append("MNIST: looked for " + sources.describe_mnist_search(folder))
    if cifar is None:
        missing.append("CIFAR-10: looked for " + sources.describe_cifar_search(folder))
    return "; ".join(missing)


def _load_tfds(data_dir, allow_download: bool) -> tuple[SourceDataset, SourceDataset]:
    return (
        sources.load_tfds_dataset("mnist", data_dir, allow_download),
        sources.load_tfds_dataset("cifar10", data_dir, allow_download),
    )


def _how_to_provide() -> str:
    return (
        "Provide the data in one of these ways:\n"
        f"  1. files: put the standard files (MNIST train-images-idx3-ubyte.gz, train-labels-idx1-"
        "ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; CIFAR-10 "
        "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/, or the binary version) in "
        f"one folder and pass data_dir=FOLDER or set ${ENV_FILES_DIR}=FOLDER;\n"
        f"  2. tfds: {sources.TFDS_INSTALL_HINT}; prepare 'mnist' and 'cifar10' once (online) and "
        "pass data_dir= or set $TFDS_DATA_DIR (sbjax never downloads unless allow_download=True);\n"
        "  3. subset: the partial real subset (mnist01.npz, cifar10_auto_truck.npz) in "
        f"../shared/data/mnist_cifar_subset next to the repository, or ${ENV_SUBSET_DIR}=FOLDER."
    )


def load_sources(
    source: str = "auto",
    data_dir: str | Path | None = None,
    *,
    verify: str = "auto",
    allow_download: bool = False,
) -> tuple[SourceDataset, SourceDataset, str]:
    """Loads MNIST and CIFAR-10 from one source (see `load_mnist_cifar`).

    Returns:
      (mnist, cifar, source_used).

    Raises:
      DataNotFoundError: nothing usable anywhere looked; the message lists every place and how to
        provide the data.
      ImportError: source="tfds" without tensorflow-datasets installed.
      CorruptDataError: a file exists but is damaged or not the published one.
    """
    check_choice("source", source, SOURCES)
    check_choice("verify", verify, sources.VERIFY_MODES)
    looked: list[str] = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()

    if source in ("files", "auto"):
        folders = [data_dir] if data_dir is not None else []
        if data_dir is None and os.environ.get(ENV_FILES_DIR):
            folders.append(Path(os.environ[ENV_FILES_DIR]).expanduser())
        if not folders:
            looked.append(f"files: no folder given (data_dir=None and ${ENV_FILES_DIR} unset)")
        for folder in folders:
            if not folder.is_dir():
                looked.append(f"files: {folder} does not exist")
                continue
            got = _load_files(folder, verify)
            if not isinstance(got, str):
                return (*got, "files")
            looked.append(f"files: {folder}: {got}")

    if source in ("tfds", "auto"):
        try:
            sources.import_tfds()
        except ImportError as e:
            if source == "tfds":
                raise
            looked.append(f"tfds: {e}")
        else:
            try:
                return (*_load_tfds(data_dir, allow_download), "tfds")
            except DataNotFoundError as e:
                looked.append(f"tfds: {e}")
            except Exception as e:
                if source == "tfds":
                    raise
                # A broken tfds install must not stop "auto" from reaching the other sources.
                logger.warning(
                    "tensorflow-datasets failed (%s: %s); trying the next source",
                    type(e).__name__,
                    e,
                )
                looked.append(f"tfds: failed with {type(e).__name__}: {e}")

    if source in ("subset", "auto"):
        folder = data_dir if data_dir is not None else default_subset_dir()
        got = load_subset(folder)
        if got is not None:
            logger.warning(
                "MNIST-CIFAR: using the partial real subset at %s (not the full data)", folder
            )
            return (*got, "subset")
        looked.append(f"subset: no {' and '.join(SUBSET_FILES)} in {folder}")

    raise DataNotFoundError(
        f"MNIST-CIFAR data not found (source={source!r}). Looked at:\n  - "
        + "\n  - ".join(looked)
        + "\n"
        + _how_to_provide()
    )


def load_mnist_cifar(
    version: str = "A",
    source: str = "auto",
    data_dir: str | Path | None = None,
    seed: int = 0,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    allow_reuse: bool = False,
    randomize_mode: str = "rebuild",
    randomized_train: bool = False,
    dtype: str = "float32",
    verify: str = "auto",
    allow_download: bool = False,
) -> MnistCifar:
    """Loads MNIST-CIFAR (Shah et al. 2020, Sec. 3.1; reference pairing of `DATA.md` §1).

    Args:
      version: "A" (digit 0 + automobile vs digit 1 + truck; the paper's), "B" or "C".
      source: where the MNIST and CIFAR-10 images come from:
        "files": the standard distribution files in `data_dir` (or `$SBJAX_MNIST_CIFAR_DIR`),
          read with NumPy and verified (see `verify`);
        "tfds": tensorflow-datasets' prepared 'mnist' and 'cifar10' (`data_dir` = tfds data dir,
          default `$TFDS_DATA_DIR` or ~/tensorflow_datasets); optional extra `sbjax[tfds]`;
        "subset": the partial real subset (`mnist01.npz`, `cifar10_auto_truck.npz`) in `data_dir`
          (or `$SBJAX_MNIST_CIFAR_SUBSET`, or ../shared/data/mnist_cifar_subset next to the repo);
        "auto": files, then tfds (if installed), then subset: the first that has the data. With an
          explicit `data_dir`, only that folder is tried (as each of the three layouts).
      data_dir: folder for the chosen source (see above).
      seed: pairing seed; the same seed gives identical sets.
      n_train, n_test: total sizes (even). Default: everything the pools allow without reuse
        (10,000 / 1,960 on the full data for version A). `n_test` applies to the randomised test
        sets too.
      allow_reuse: allow reusing images to reach n_train / n_test beyond the pools (the paper's
        50,000 / 10,000; the reference never reuses).
      randomize_mode: "rebuild" (reference: randomised test sets are separately paired sets) or
        "permute_block" (paper-style: one block of the standard test set permuted across rows).
      randomized_train: also build randomised training sets.
      dtype: "float32" (values in [0, 1]) or "uint8" (0..255, a quarter of the memory).
      verify: checksum policy for source="files": "auto", "strict", "warn" or "off"
        (see `sbjax.data.sources`).
      allow_download: let tensorflow-datasets download (source "tfds"/"auto"). Off by default:
        missing data fail at once instead of a multi-minute network retry.

    Returns:
      An `MnistCifar`.

    Raises:
      ValueError: a bad parameter (named in the message), e.g. an unknown version or source, or an
        n_train larger than the pools allow.
      DataNotFoundError: no data at any place looked (all listed in the message, with how to
        provide the data). Raised immediately; nothing is downloaded.
      CorruptDataError: damaged files, or full-size files that are not the published ones.
    """
    check_choice("version", version, tuple(VERSIONS))
    check_choice("source", source, SOURCES)
    check_int("seed", seed, min_value=0)
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None:
            check_int(name, n, min_value=2)
            if n % 2:
                fail(name, n, "an even integer (half of the images per label)")
    check_choice("randomize_mode", randomize_mode, RANDOMIZE_MODES)
    check_choice("dtype", dtype, ("float32", "uint8"))
    check_choice("verify", verify, sources.VERIFY_MODES)
    mnist, cifar, used = load_sources(
        source, data_dir, verify=verify, allow_download=allow_download
    )
    data = build_mnist_cifar(
        mnist,
        cifar,
        version=version,
        seed=seed,
        n_train=n_train,
        n_test=n_test,
        allow_reuse=allow_reuse,
        randomize_mode=randomize_mode,
        randomized_train=randomized_train,
        dtype=dtype,
        source=used,
    )
    logger.info("MNIST-CIFAR %s from %s (%s): sizes %s", version, used, data.location, data.sizes)
    return data
