"""All trees of a model laid end to end, walked for every (row, tree) pair at once.

One numpy call per level serves every tree and row, which is what makes a single row
cheap: sklearn's per-tree loop (and joblib's per-tree task for forests) costs more than
the comparisons themselves. Leaves point to themselves, so lanes that reach a leaf early
stay put while deeper lanes finish.
"""

from dataclasses import dataclass

import numpy as np

from app.serving.backends.evaluator import Array


@dataclass(frozen=True)
class FlatTrees:
    roots: Array  # (n_trees,) node index of each tree's root
    feature: Array  # (n_nodes,) feature tested (0 at leaves)
    threshold: Array  # (n_nodes,) float64; go left when x <= threshold
    children: Array  # (2 * n_nodes,) left child at 2i, right child at 2i + 1
    nan_right: Array | None  # (n_nodes,) where a NaN goes right; None: inputs are finite
    depth: int  # levels to walk: the deepest tree's depth

    def leaves(self, x: Array) -> Array:
        """Leaf index of every tree for every row of the C-ordered float64 `x`: (n, trees)."""
        n, width = x.shape
        flat = x.ravel()
        base = (np.arange(n, dtype=np.intp) * width)[:, None]
        node = np.repeat(self.roots[None, :], n, axis=0)
        for _ in range(self.depth):
            value = flat.take(self.feature.take(node) + base)
            # x > t is "not x <= t" for every number; NaN (HistGradientBoosting only)
            # follows the node's missing-value direction instead.
            right = value > self.threshold.take(node)
            if self.nan_right is not None:
                missing = np.isnan(value)
                if missing.any():
                    right[missing] = self.nan_right.take(node[missing])
            node = self.children.take(node * 2 + right)
        return node


def flatten(
    features: list[Array],
    thresholds: list[Array],
    lefts: list[Array],
    rights: list[Array],
    is_leaf: list[Array],
    depth: int,
    nan_right: list[Array] | None = None,
) -> FlatTrees:
    """Join per-tree node arrays (children indexed within each tree) into one FlatTrees."""
    sizes = np.array([len(f) for f in features], dtype=np.intp)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    leaf = np.concatenate(is_leaf).astype(bool)
    own = np.arange(int(sizes.sum()), dtype=np.intp)
    left = np.concatenate([np.asarray(a, np.intp) + o for a, o in zip(lefts, offsets, strict=True)])
    right = np.concatenate(
        [np.asarray(a, np.intp) + o for a, o in zip(rights, offsets, strict=True)]
    )
    left[leaf] = own[leaf]
    right[leaf] = own[leaf]
    feature = np.concatenate(features).astype(np.intp)
    feature[leaf] = 0
    threshold = np.concatenate(thresholds).astype(np.float64)
    threshold[leaf] = 0.0
    return FlatTrees(
        roots=offsets,
        feature=feature,
        threshold=threshold,
        children=np.stack([left, right], axis=1).ravel(),
        nan_right=None if nan_right is None else np.concatenate(nan_right).astype(bool),
        depth=depth,
    )
