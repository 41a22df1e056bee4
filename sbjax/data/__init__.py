"""Pure samplers for the paper's synthetic datasets (Shah et al. 2020, Sec. 3.1 / App. B).

    from sbjax.data import make_dataset
    ds = make_dataset("lms", k=5, d=50)
    x, y = ds.sample(key, n)      # x float32 [n, d] (model basis), y int32 [n] in {0, 1}
    z = ds.to_canonical(x)        # canonical basis, where S = ds.simple_coords

MNIST-CIFAR loaders live in `sbjax.data.mnist_cifar` (imported on demand: it needs optional data).
"""

from sbjax.data import blocks
from sbjax.data.rotation import ROTATIONS, make_rotation
from sbjax.data.synthetic import DATASET_NAMES, NOISE_FILLS, Block, Dataset, make_dataset

__all__ = [
    "DATASET_NAMES",
    "NOISE_FILLS",
    "ROTATIONS",
    "Block",
    "Dataset",
    "blocks",
    "make_dataset",
    "make_rotation",
]
