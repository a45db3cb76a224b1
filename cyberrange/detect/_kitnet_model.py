"""KitNET (Mirsky et al., NDSS 2018) in numpy: feature mapper, autoencoder ensemble, output
autoencoder -- batched, plus the per-packet reference that ``bench/kitnet.py`` compares with.

::

    100 features ─▶ mapper (correlation clusters, ≤ m each) ─▶ k small autoencoders
                                                               │ RMSE of each (k values)
                                                               ▼
                                                    output autoencoder ─▶ RMSE = anomaly score

Every autoencoder is Kitsune's ``dA``: min-max normalised input, one hidden layer of
``ceil(0.75 n)`` sigmoid units, tied weights (decoder = encoderᵀ), sigmoid output, the same
update rule (error ``x - z`` back-propagated through the hidden sigmoid). Two choices differ from
the reference, both for speed and both deterministic for a fixed ``seed``:

* the k ensemble autoencoders are one block-diagonal weight matrix (F × Σhidden): the blocks never
  mix, so a batch of packets runs through all of them with two matrix products, and the
  per-autoencoder RMSE is a product with the cluster-membership matrix;
* training is minibatch SGD over the grace-period vectors for a few epochs (shuffled with the
  seed) instead of one online pass, and min-max bounds come from the whole grace period rather
  than growing packet by packet. The output autoencoder is trained after the ensemble, on the
  ensemble's RMSEs of the same grace period.
"""
from __future__ import annotations

import math

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


# ---------------------------------------------------------------------------------------------
# feature mapper: single-linkage clustering on correlation distance, cut into groups of <= m

def correlation_distance(X: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation of the columns (clipped at 0, as Kitsune's corClust); a constant
    column is at distance 1 from every other."""
    Xc = X - X.mean(0)
    ss = np.sqrt((Xc * Xc).sum(0))
    C = Xc.T @ Xc
    denom = np.outer(ss, ss)
    with np.errstate(invalid="ignore", divide="ignore"):
        D = 1.0 - np.where(denom > 0, C / np.where(denom > 0, denom, 1), 0.0)
    D = np.clip(D, 0.0, None)
    np.fill_diagonal(D, 0.0)
    return D


def cluster_features(X: np.ndarray, max_size: int) -> list[list[int]]:
    """Kitsune's feature map: the single-linkage dendrogram of the features (built from the
    minimum spanning tree of the distance matrix), split top-down until every part holds at
    most ``max_size`` features. Deterministic (ties broken by index)."""
    n = X.shape[1]
    if n <= max_size:
        return [list(range(n))]
    D = correlation_distance(X)
    # Prim's MST
    in_tree = np.zeros(n, bool)
    in_tree[0] = True
    best = D[0].copy()
    parent = np.zeros(n, int)
    edges = []
    for _ in range(n - 1):
        cand = np.where(in_tree, np.inf, best)
        j = int(np.argmin(cand))
        edges.append((float(best[j]), int(parent[j]), j))
        in_tree[j] = True
        closer = D[j] < best
        parent[closer & ~in_tree] = j
        best = np.minimum(best, D[j])
    edges.sort(key=lambda e: (e[0], min(e[1], e[2]), max(e[1], e[2])))
    # dendrogram by union-find: node id >= n are merges (left, right)
    owner = list(range(n))
    children: dict[int, tuple[int, int]] = {}
    root_of = {i: i for i in range(n)}          # union-find root -> dendrogram node

    def find(i):
        while owner[i] != i:
            owner[i] = owner[owner[i]]
            i = owner[i]
        return i
    node = n
    for _, a, b in edges:
        ra, rb = find(a), find(b)
        children[node] = (root_of[ra], root_of[rb])
        owner[rb] = ra
        root_of[ra] = node
        node += 1
    top = node - 1

    def leaves(x):
        out, stack = [], [x]
        while stack:
            y = stack.pop()
            if y < n:
                out.append(y)
            else:
                stack.extend(reversed(children[y]))
        return out

    groups = []

    def split(x):
        lv = leaves(x)
        if len(lv) <= max_size:
            groups.append(sorted(lv))
        else:
            left, right = children[x]
            split(left)
            split(right)
    split(top)
    return groups


# ---------------------------------------------------------------------------------------------
# autoencoders

class _AE:
    """Tied-weight autoencoder(s); with ``mask`` block-diagonal (an ensemble in one matrix)."""

    def __init__(self, W, mask):
        self.W, self.mask = W, mask
        self.hb = np.zeros(W.shape[1])
        self.vb = np.zeros(W.shape[0])
        self.lo = np.zeros(W.shape[0])
        self.hi = np.ones(W.shape[0])

    def norm(self, X):
        return (X - self.lo) / (self.hi - self.lo + 1e-16)

    def reconstruct(self, Xn):
        y = sigmoid(Xn @ self.W + self.hb)
        return sigmoid(y @ self.W.T + self.vb)

    def train(self, X, rng, epochs, batch, lr):
        self.lo, self.hi = X.min(0), X.max(0)
        Xn = self.norm(X)
        n = len(Xn)
        for _ in range(epochs):
            perm = rng.permutation(n)
            for s in range(0, n, batch):
                x = Xn[perm[s:s + batch]]
                y = sigmoid(x @ self.W + self.hb)
                z = sigmoid(y @ self.W.T + self.vb)
                l2 = x - z
                l1 = (l2 @ self.W) * y * (1 - y)
                k = lr / len(x)
                gW = x.T @ l1 + l2.T @ y
                if self.mask is not None:
                    gW *= self.mask
                self.W += k * gW
                self.hb += k * l1.sum(0)
                self.vb += k * l2.sum(0)


def _init(rng, n_in, n_hidden):
    a = 1.0 / n_in
    return rng.uniform(-a, a, (n_in, n_hidden))


class KitNET:
    """The ensemble and its output layer, trained on a grace period, executed in batches."""

    def __init__(self, max_cluster: int = 10, hidden_ratio: float = 0.75, seed: int = 0):
        self.max_cluster, self.hidden_ratio, self.seed = max_cluster, hidden_ratio, seed
        self.clusters: list[list[int]] = []

    def fit(self, X: np.ndarray, epochs: int = 10, batch: int = 32, lr: float = 0.1,
            map_rows: int | None = None) -> None:
        rng = np.random.default_rng(self.seed)
        X = np.asarray(X, float)
        self.n_features = X.shape[1]
        self.clusters = cluster_features(X[:map_rows] if map_rows else X, self.max_cluster)
        F = self.n_features
        k = len(self.clusters)
        hidden = [max(1, math.ceil(len(c) * self.hidden_ratio)) for c in self.clusters]
        H = sum(hidden)
        # features permuted so that each cluster is contiguous; W block-diagonal
        self.perm = np.concatenate([np.asarray(c, int) for c in self.clusters])
        W = np.zeros((F, H))
        mask = np.zeros((F, H))
        self.member = np.zeros((F, k))              # permuted feature -> cluster
        r = h = 0
        for i, (c, nh) in enumerate(zip(self.clusters, hidden)):
            W[r:r + len(c), h:h + nh] = _init(rng, len(c), nh)
            mask[r:r + len(c), h:h + nh] = 1
            self.member[r:r + len(c), i] = 1.0 / len(c)
            r += len(c)
            h += nh
        self.hidden = hidden
        self.ens = _AE(W, mask)
        self.ens.train(X[:, self.perm], rng, epochs, batch, lr)
        R = self._ensemble_rmse(X)
        no = max(1, math.ceil(k * self.hidden_ratio))
        self.out = _AE(_init(rng, k, no), None)
        self.out.train(R, rng, epochs, batch, lr)

    def _ensemble_rmse(self, X):
        Xn = self.ens.norm(X[:, self.perm])
        Z = self.ens.reconstruct(Xn)
        return np.sqrt(((Xn - Z) ** 2) @ self.member)

    def execute(self, X: np.ndarray, chunk: int = 65536):
        """(RMSE of the output layer (n,), RMSE of each ensemble autoencoder (n, k))."""
        X = np.asarray(X, float)
        rm = np.empty(len(X))
        R = np.empty((len(X), len(self.clusters)))
        for s in range(0, len(X), chunk):
            r = self._ensemble_rmse(X[s:s + chunk])
            rn = self.out.norm(r)
            z = self.out.reconstruct(rn)
            rm[s:s + chunk] = np.sqrt(((rn - z) ** 2).mean(1))
            R[s:s + chunk] = r
        return rm, R

    # -- the per-packet reference (bench/kitnet.py): Kitsune's KitNET.execute, one packet and
    # one autoencoder at a time, on the same trained weights
    def reference_parts(self):
        parts = []
        r = h = 0
        for c, nh in zip(self.clusters, self.hidden):
            n = len(c)
            parts.append(dict(idx=np.asarray(c), W=self.ens.W[r:r + n, h:h + nh].copy(),
                              hb=self.ens.hb[h:h + nh].copy(), vb=self.ens.vb[r:r + n].copy(),
                              lo=self.ens.lo[r:r + n].copy(), hi=self.ens.hi[r:r + n].copy()))
            r += n
            h += nh
        out = dict(W=self.out.W, hb=self.out.hb, vb=self.out.vb, lo=self.out.lo, hi=self.out.hi)
        return parts, out


def _da_execute(p, x):
    x = (x - p["lo"]) / (p["hi"] - p["lo"] + 1e-16)
    y = sigmoid(np.dot(x, p["W"]) + p["hb"])
    z = sigmoid(np.dot(y, p["W"].T) + p["vb"])
    return math.sqrt(np.mean((x - z) ** 2))


def reference_execute(parts, out, x: np.ndarray) -> float:
    """One packet through the ensemble and the output layer, as Kitsune's KitNET.execute."""
    S = np.array([_da_execute(p, x[p["idx"]]) for p in parts])
    return _da_execute(out, S)


class ReferenceDA:
    """Kitsune's ``dA.train``: one online SGD step per packet, min-max bounds grown on the fly
    (the training baseline of bench/kitnet.py)."""

    def __init__(self, n_in, hidden_ratio=0.75, lr=0.1, seed=0):
        rng = np.random.default_rng(seed)
        nh = max(1, math.ceil(n_in * hidden_ratio))
        self.W = _init(rng, n_in, nh)
        self.hb, self.vb = np.zeros(nh), np.zeros(n_in)
        self.lo, self.hi = np.full(n_in, np.inf), np.full(n_in, -np.inf)
        self.lr = lr

    def train(self, x):
        self.hi = np.maximum(self.hi, x)
        self.lo = np.minimum(self.lo, x)
        x = (x - self.lo) / (self.hi - self.lo + 1e-16)
        y = sigmoid(np.dot(x, self.W) + self.hb)
        z = sigmoid(np.dot(y, self.W.T) + self.vb)
        l2 = x - z
        l1 = np.dot(l2, self.W) * y * (1 - y)
        self.W += self.lr * (np.outer(x, l1) + np.outer(l2, y))
        self.hb += self.lr * l1
        self.vb += self.lr * l2
        return math.sqrt(np.mean(l2 ** 2))
