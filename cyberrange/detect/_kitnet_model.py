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

* training holds the k ensemble autoencoders in one padded (k, m, h) tensor (padding masked out
  of gradients and errors); execution compiles them into one block-diagonal float32 matrix, so
  a batch of packets runs through all of them with two dense matrix products instead of k small
  products per packet;
* training is minibatch SGD over the grace-period vectors for a few epochs (shuffled with the
  seed) instead of one online pass, and min-max bounds come from the whole grace period rather
  than growing packet by packet. The output autoencoder is trained after the ensemble, on the
  ensemble's RMSEs of the same grace period.
"""
from __future__ import annotations

import math

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):            # exp(710+) = inf -> 0: the right limit
        return 1.0 / (1.0 + np.exp(-x))


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

class _Stack:
    """k tied-weight autoencoders of up to m inputs and h hidden units each, stored padded as
    (k, m, h) weights so a batch runs through all of them with batched matrix products
    (``(k, n, m) @ (k, m, h)``). Padding rows and columns hold zero weights, are masked out of
    the gradient and out of the reconstruction error."""

    def __init__(self, rng, sizes: list[int], hidden: list[int]):
        k, m, h = len(sizes), max(sizes), max(hidden)
        self.sizes = np.asarray(sizes, float)
        self.W = np.zeros((k, m, h))
        self.wmask = np.zeros((k, m, h))
        self.imask = np.zeros((k, 1, m))
        for i, (ni, nh) in enumerate(zip(sizes, hidden)):
            self.W[i, :ni, :nh] = _init(rng, ni, nh)
            self.wmask[i, :ni, :nh] = 1.0
            self.imask[i, 0, :ni] = 1.0
        self.hb = np.zeros((k, 1, h))
        self.vb = np.zeros((k, 1, m))
        self.lo = np.zeros((k, 1, m))
        self.scale = np.ones((k, 1, m))

    def norm(self, Xs):
        """(k, n, m) inputs -> min-max normalised (padding stays 0)."""
        return (Xs - self.lo) * self.scale

    def forward(self, Xn):
        y = sigmoid(Xn @ self.W + self.hb)
        z = sigmoid(y @ self.W.transpose(0, 2, 1) + self.vb)
        return y, z

    def rmse(self, Xn):
        """(n, k) RMSE of every autoencoder."""
        _, z = self.forward(Xn)
        err = (Xn - z) * self.imask
        return np.sqrt((err * err).sum(2).T / self.sizes)

    def train(self, Xs, rng, epochs, batch, lr):
        lo, hi = Xs.min(1, keepdims=True), Xs.max(1, keepdims=True)
        self.lo = lo * self.imask
        self.scale = self.imask / (hi - lo + 1e-16)
        Xn = self.norm(Xs)
        n = Xn.shape[1]
        for _ in range(epochs):
            perm = rng.permutation(n)
            for s in range(0, n, batch):
                x = Xn[:, perm[s:s + batch]]
                y, z = self.forward(x)
                l2 = (x - z) * self.imask
                l1 = (l2 @ self.W) * y * (1 - y)
                g = x.transpose(0, 2, 1) @ l1 + l2.transpose(0, 2, 1) @ y
                step = lr / x.shape[1]
                self.W += step * g * self.wmask
                self.hb += step * l1.sum(1, keepdims=True)
                self.vb += step * l2.sum(1, keepdims=True) * self.imask


def _init(rng, n_in, n_hidden):
    a = 1.0 / n_in
    return rng.uniform(-a, a, (n_in, n_hidden))


class KitNET:
    """The ensemble and its output layer, trained on a grace period, executed in batches."""

    def __init__(self, max_cluster: int = 10, hidden_ratio: float = 0.75, seed: int = 0):
        self.max_cluster, self.hidden_ratio, self.seed = max_cluster, hidden_ratio, seed
        self.clusters: list[list[int]] = []

    def _gather(self, X):
        """(n, F) -> (k, n, m): each autoencoder's inputs, padded with a zero column."""
        Xp = np.concatenate([X, np.zeros((len(X), 1))], 1)
        return Xp[:, self.index].transpose(1, 0, 2)

    def fit(self, X: np.ndarray, epochs: int = 10, batch: int = 32, lr: float = 0.1,
            map_rows: int | None = None) -> None:
        rng = np.random.default_rng(self.seed)
        X = np.asarray(X, float)
        self.n_features = F = X.shape[1]
        self.clusters = cluster_features(X[:map_rows] if map_rows else X, self.max_cluster)
        sizes = [len(c) for c in self.clusters]
        self.hidden = [max(1, math.ceil(n * self.hidden_ratio)) for n in sizes]
        m = max(sizes)
        self.index = np.full((len(sizes), m), F)          # F = the zero padding column
        for i, c in enumerate(self.clusters):
            self.index[i, :len(c)] = c
        self.ens = _Stack(rng, sizes, self.hidden)
        self.ens.train(self._gather(X), rng, epochs, batch, lr)
        R = self.ens.rmse(self.ens.norm(self._gather(X)))
        k = len(sizes)
        self.out = _Stack(rng, [k], [max(1, math.ceil(k * self.hidden_ratio))])
        self.out.train(R[None], rng, epochs, batch, lr)
        self._compile()

    def _compile(self) -> None:
        """Trained weights -> one dense block-diagonal float32 matrix (inputs permuted so each
        autoencoder's are contiguous): BLAS runs a dense (n × F) @ (F × Σh) product far faster
        than k small ones, and float32 halves the memory traffic and speeds up exp."""
        f32 = np.float32
        perm = np.concatenate([np.asarray(c, int) for c in self.clusters])
        F, H, k = len(perm), sum(self.hidden), len(self.clusters)
        W = np.zeros((F, H))
        hb, vb, lo, scale = np.zeros(H), np.zeros(F), np.zeros(F), np.zeros(F)
        member = np.zeros((F, k))
        r = h = 0
        st = self.ens
        for i, (c, nh) in enumerate(zip(self.clusters, self.hidden)):
            n = len(c)
            W[r:r + n, h:h + nh] = st.W[i, :n, :nh]
            hb[h:h + nh] = st.hb[i, 0, :nh]
            vb[r:r + n] = st.vb[i, 0, :n]
            lo[r:r + n] = st.lo[i, 0, :n]
            scale[r:r + n] = st.scale[i, 0, :n]
            member[r:r + n, i] = 1.0 / n
            r += n
            h += nh
        o = self.out
        self._exec = {"perm": perm, "W": W.astype(f32), "WT": np.ascontiguousarray(W.T, f32),
                      "hb": hb.astype(f32), "vb": vb.astype(f32), "lo": lo.astype(f32),
                      "scale": scale.astype(f32), "member": member.astype(f32),
                      "oW": o.W[0].astype(f32), "oWT": np.ascontiguousarray(o.W[0].T, f32),
                      "ohb": o.hb[0, 0].astype(f32), "ovb": o.vb[0, 0].astype(f32),
                      "olo": o.lo[0, 0].astype(f32), "oscale": o.scale[0, 0].astype(f32)}

    def execute(self, X: np.ndarray, chunk: int = 32768):
        """(RMSE of the output layer (n,), RMSE of each ensemble autoencoder (n, k)), float32
        arithmetic (RMSEs agree with the float64 per-packet reference to ~1e-5 relative)."""
        e = self._exec
        rm = np.empty(len(X))
        R = np.empty((len(X), len(self.clusters)))
        for s in range(0, len(X), chunk):
            x = np.asarray(X[s:s + chunk, e["perm"]], np.float32)
            x -= e["lo"]
            x *= e["scale"]
            z = sigmoid(sigmoid(x @ e["W"] + e["hb"]) @ e["WT"] + e["vb"])
            x -= z
            x *= x
            r = np.sqrt(x @ e["member"])
            R[s:s + chunk] = r
            r -= e["olo"]
            r *= e["oscale"]
            z = sigmoid(sigmoid(r @ e["oW"] + e["ohb"]) @ e["oWT"] + e["ovb"])
            r -= z
            rm[s:s + chunk] = np.sqrt((r * r).mean(1))
        return rm, R

    # -- the per-packet reference (bench/kitnet.py): Kitsune's KitNET.execute, one packet and
    # one autoencoder at a time, on the same trained weights
    def reference_parts(self):
        def part(st, i, n, nh, idx=None):
            return {"idx": idx, "W": st.W[i, :n, :nh].copy(), "hb": st.hb[i, 0, :nh].copy(),
                    "vb": st.vb[i, 0, :n].copy(), "lo": st.lo[i, 0, :n].copy(),
                    "hi": st.lo[i, 0, :n] + 1.0 / st.scale[i, 0, :n] - 1e-16}
        parts = [part(self.ens, i, len(c), nh, np.asarray(c))
                 for i, (c, nh) in enumerate(zip(self.clusters, self.hidden))]
        k = len(self.clusters)
        return parts, part(self.out, 0, k, self.out.W.shape[2])


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
