"""Robust geometric verification: fit a transform query px -> reference px to tentative matches.

Own LO-RANSAC (MSAC scoring, seeded RNG, so two runs give identical results): minimal samples are solved in
closed form, hypotheses are scored on all correspondences, every new best hypothesis is locally optimised by
least-squares re-fits on its inliers, and the final model is a least-squares re-fit on the inliers. Two
implementations of the same algorithm: the Numba kernel :func:`matcher.local.kernels.ransac` (default; one
hypothesis at a time, scoring stops once a hypothesis cannot win) and :func:`_ransac_numpy` (vectorised over
batches of hypotheses; the reference the kernel is tested against, ~7x slower). Correspondences sharing one
location (SIFT gives several orientations per keypoint) are deduplicated on a ``dedup_px`` grid before
sampling/scoring, and ``n_inliers`` counts unique locations, so duplicates cannot inflate the evidence. The
plausibility checks (collinear inliers, extreme scale, perspective, area collapse, reflection) run in numpy on
the result of either.

Point convention: pixel centres at integer coordinates, an image of width W spans x in [-0.5, W - 0.5].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IMPLS",
    "MIN_SAMPLE",
    "MODEL_IDS",
    "GeometricFit",
    "apply_transform",
    "clip_halfplane",
    "clip_polygon",
    "convex_hull",
    "fit_geometry",
    "flip_matrix",
    "frame_quad",
    "polygon_area",
    "unique_count",
]

MIN_SAMPLE = {"homography": 4, "affine": 3, "similarity": 2}  # minimal sample size per model
MODEL_IDS = {"homography": 0, "affine": 1, "similarity": 2}  # model ids of the Numba kernels
IMPLS = ("numba", "numpy")  # RANSAC implementations (numpy: the vectorised reference)

_BATCH_ELEMENTS = 65536  # hypotheses x points scored together (batch size = this / n, in [64, 512])
_LO_ITERS = 4  # least-squares re-fits per local optimisation
_REWEIGHT_ITERS = 3  # reweighted DLT passes (approximates the geometric error)
_COLLINEAR_RATIO = 0.02  # smaller / larger singular value of centred points below this: collinear
_MIN_SPREAD_PX = 1.0  # RMS spread (px) below which points count as one location / as a line
_MIN_SAMPLE_AREA = 1e-3  # triangle area (normalised coordinates) below which a minimal sample is degenerate


@dataclass
class GeometricFit:
    """Result of :func:`fit_geometry`.

    transform: (3, 3) float64 mapping query px -> reference px (H[2, 2] == 1), None when no model was found
    inliers:   (K,) bool, correspondences within the threshold of ``transform`` (all False when none)
    n_inliers: unique inlier locations (min over query and reference of the distinct ``dedup_px`` cells)
    reason:    None when the fit is accepted, else why it is rejected (e.g. "degenerate: collinear inliers")
    rmse:      RMS transfer error of the inliers, reference px (nan when no model)
    """

    transform: np.ndarray | None
    inliers: np.ndarray
    n_inliers: int
    reason: str | None = None
    model: str = "homography"
    rmse: float = float("nan")

    @property
    def ok(self) -> bool:
        """True when the fit is accepted (``reason`` is None)."""
        return self.reason is None


# ----------------------------------------------------------------------------------------------- small helpers
def apply_transform(transform: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (K, 2) points through a (3, 3) projective transform; returns (K, 2) float64 (inf where w == 0)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    h = np.asarray(transform, np.float64)
    x = pts @ h[:2, :2].T + h[:2, 2]
    w = (pts @ h[2, :2] + h[2, 2])[:, None]
    out = np.full_like(x, np.inf)
    np.divide(x, w, out=out, where=w != 0)  # (np.errstate costs more than this on small inputs)
    out[~np.isfinite(out)] = np.inf
    return out


def flip_matrix(width: int) -> np.ndarray:
    """(3, 3) float64 horizontal flip x -> W - 1 - x of an image ``width`` px wide (its own inverse)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def frame_quad(box: tuple[float, float, float, float]) -> np.ndarray:
    """(4, 2) float64 corners (clockwise on screen) of the pixel box [x0, x1) x [y0, y1) in px coordinates."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y0 - 0.5], [x1 - 0.5, y1 - 0.5], [x0 - 0.5, y1 - 0.5]])


def polygon_area(poly: np.ndarray) -> float:
    """Signed area (shoelace) of a (P, 2) polygon, px^2; positive when clockwise on screen (y down)."""
    p = np.asarray(poly, np.float64).reshape(-1, 2).tolist()  # small polygons: plain floats are fastest
    n = len(p)
    if n < 3:
        return 0.0
    acc = 0.0
    for i in range(n):
        (x0, y0), (x1, y1) = p[i], p[(i + 1) % n]
        acc += x0 * y1 - y0 * x1
    return 0.5 * acc


def convex_hull(pts: np.ndarray) -> np.ndarray:
    """(P, 2) float64 convex hull (monotone chain, positive orientation) of (K, 2) points; P may be < 3."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    if len(p):
        p = p[np.lexsort((p[:, 1], p[:, 0]))]  # sorted by x then y, duplicates dropped
        p = p[np.concatenate([[True], np.any(p[1:] != p[:-1], axis=1)])]
    if len(p) < 3:
        return p
    pl = [(q[0], q[1]) for q in p.tolist()]

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for q in seq:
            while len(out) >= 2:
                a, b = out[-2], out[-1]
                if (b[0] - a[0]) * (q[1] - a[1]) - (b[1] - a[1]) * (q[0] - a[0]) > 0:
                    break
                out.pop()
            out.append(q)
        return out

    lower, upper = half(pl), half(pl[::-1])
    return np.array(lower[:-1] + upper[:-1], np.float64)


def clip_halfplane(poly: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Part of a convex (P, 2) polygon where a * x + b * y + c >= 0 (Sutherland-Hodgman, one edge)."""
    p = np.asarray(poly, np.float64).reshape(-1, 2)
    if len(p) == 0:
        return p
    pl = p.tolist()  # small polygons: plain floats are fastest
    val = [a * x + b * y + c for x, y in pl]
    res: list[list[float]] = []
    for i in range(len(pl)):
        j = (i + 1) % len(pl)
        if val[i] >= 0:
            res.append(pl[i])
        if (val[i] >= 0) != (val[j] >= 0):
            t = val[i] / (val[i] - val[j])
            res.append([pl[i][0] + t * (pl[j][0] - pl[i][0]), pl[i][1] + t * (pl[j][1] - pl[i][1])])
    return np.array(res, np.float64).reshape(-1, 2)


def clip_polygon(poly: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Clip a convex (P, 2) polygon to the axis-aligned rectangle (xmin, ymin, xmax, ymax)."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    out = clip_halfplane(poly, 1.0, 0.0, -xmin)
    out = clip_halfplane(out, -1.0, 0.0, xmax)
    out = clip_halfplane(out, 0.0, 1.0, -ymin)
    return clip_halfplane(out, 0.0, -1.0, ymax)


def _first_of_rows(cells: np.ndarray) -> np.ndarray:
    """(U,) int64 ascending indices of the first occurrence of each distinct row of (K, C) int64 ``cells`` (K >= 1);
    what ``np.unique(cells, axis=0, return_index=True)`` gives, sorted, without its per-call overhead."""
    order = np.lexsort(cells.T[::-1])  # stable: equal rows keep index order
    srt = cells[order]
    new = np.empty(len(order), bool)
    new[0] = True
    np.any(srt[1:] != srt[:-1], axis=1, out=new[1:])
    return np.sort(order[new])


def unique_count(pts: np.ndarray, cell_px: float) -> int:
    """Number of distinct ``cell_px`` grid cells occupied by (K, 2) points (duplicates within ~cell_px count once)."""
    if len(pts) == 0:
        return 0
    return len(_first_of_rows(np.floor(np.asarray(pts, np.float64).reshape(-1, 2) / cell_px).astype(np.int64)))


def _principal(pts: np.ndarray) -> tuple[float, float, float]:
    """(larger, smaller) eigenvalues of the (2, 2) covariance of (K, 2) points (px^2) and the angle (rad) of the
    principal axis; closed form (the singular values of the centred points are sqrt(K * eigenvalue))."""
    c = pts - pts.mean(axis=0)
    a, b, d = float(np.mean(c[:, 0] ** 2)), float(np.mean(c[:, 0] * c[:, 1])), float(np.mean(c[:, 1] ** 2))
    mid, rad = 0.5 * (a + d), math.hypot(0.5 * (a - d), b)
    return mid + rad, max(mid - rad, 0.0), 0.5 * math.atan2(2.0 * b, a - d)


def _spread(pts: np.ndarray) -> tuple[float, float]:
    """(larger, smaller) RMS spread (px) of (K, 2) points along their principal axes."""
    if len(pts) < 2:
        return 0.0, 0.0
    big, small, _ = _principal(np.asarray(pts, np.float64))
    return math.sqrt(big), math.sqrt(small)


def _is_collinear(pts: np.ndarray, drop: int = 0) -> bool:
    """True when (K, 2) points lie on a line, after dropping the ``drop`` points farthest from it (a line plus
    ``s - 2`` free points determines a model of minimal sample size ``s`` exactly, so such a support is
    degenerate however many points sit on the line)."""
    pts = np.asarray(pts, np.float64)
    for _ in range(min(drop, max(0, len(pts) - 2))):
        angle = _principal(pts)[2]
        normal = np.array([-math.sin(angle), math.cos(angle)])
        pts = np.delete(pts, int(np.argmax(np.abs((pts - pts.mean(axis=0)) @ normal))), axis=0)
    big, small = _spread(pts)
    return small < _MIN_SPREAD_PX or small < _COLLINEAR_RATIO * big


def _normaliser(pts: np.ndarray) -> np.ndarray:
    """(3, 3) similarity moving the centroid to 0 and the mean distance to sqrt(2) (Hartley)."""
    c = pts.mean(axis=0)
    d = float(np.mean(np.linalg.norm(pts - c, axis=1)))
    s = math.sqrt(2.0) / d if d > 1e-12 else 1.0
    return np.array([[s, 0.0, -s * c[0]], [0.0, s, -s * c[1]], [0.0, 0.0, 1.0]])


def _transform_pts(t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ t[:2, :2].T + t[:2, 2]


# ------------------------------------------------------------------------------------------- minimal solvers
def _tri_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed doubled areas of triangles a, b, c ((..., 2) arrays)."""
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def _sample_ok(model: str, sq: np.ndarray, sr: np.ndarray, allow_reflection: bool) -> np.ndarray:
    """(B,) bool: minimal samples sq, sr (B, s, 2; normalised coords) that are non-degenerate and consistently
    oriented (a homography preserves the orientation of every point triple on one side of its horizon)."""
    if model == "similarity":
        dq = np.linalg.norm(sq[:, 1] - sq[:, 0], axis=1)
        dr = np.linalg.norm(sr[:, 1] - sr[:, 0], axis=1)
        return (dq > 1e-3) & (dr > 1e-3)
    triples = [(0, 1, 2)] if model == "affine" else [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    aq = np.stack([_tri_area(sq[:, i], sq[:, j], sq[:, k]) for i, j, k in triples], axis=1)
    ar = np.stack([_tri_area(sr[:, i], sr[:, j], sr[:, k]) for i, j, k in triples], axis=1)
    big = (np.abs(aq) > _MIN_SAMPLE_AREA).all(axis=1) & (np.abs(ar) > _MIN_SAMPLE_AREA).all(axis=1)
    prod = np.sign(aq) * np.sign(ar)
    consistent = (prod == prod[:, :1]).all(axis=1)
    if not allow_reflection:
        consistent &= prod[:, 0] > 0
    return big & consistent


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross products of (B, 3) vectors (np.cross has a large per-call overhead)."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def _adjugate(m: np.ndarray) -> np.ndarray:
    """Adjugate of (B, 3, 3) matrices (inverse times determinant)."""
    c0, c1, c2 = m[:, :, 0], m[:, :, 1], m[:, :, 2]
    out = np.empty_like(m)
    out[:, 0], out[:, 1], out[:, 2] = _cross(c1, c2), _cross(c2, c0), _cross(c0, c1)
    return out


def _basis(p: np.ndarray) -> np.ndarray:
    """(B, 3, 3) projective basis mapping e1, e2, e3, (1,1,1) to 4 points p (B, 4, 2)."""
    ph = np.concatenate([p, np.ones(p.shape[:2] + (1,))], axis=2)  # (B, 4, 3)
    m = np.swapaxes(ph[:, :3], 1, 2)  # columns p1, p2, p3
    lam = np.einsum("bij,bj->bi", _adjugate(m), ph[:, 3])
    return m * lam[:, None, :]


def _minimal(model: str, sq: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """(B, 3, 3) transforms solving minimal samples sq -> sr (B, s, 2)."""
    b = len(sq)
    if model == "homography":
        return np.einsum("bij,bjk->bik", _basis(sr), _adjugate(_basis(sq)))
    if model == "affine":
        mq = np.concatenate([sq, np.ones((b, 3, 1))], axis=2)  # rows [x, y, 1]
        sol = np.einsum("bij,bjk->bik", _adjugate(mq), sr) / np.linalg.det(mq)[:, None, None]  # (B, 3, 2)
        out = np.zeros((b, 3, 3))
        out[:, :2, :] = np.swapaxes(sol, 1, 2)
        out[:, 2, 2] = 1.0
        return out
    zq = sq[..., 0] + 1j * sq[..., 1]
    zr = sr[..., 0] + 1j * sr[..., 1]
    a = (zr[:, 1] - zr[:, 0]) / (zq[:, 1] - zq[:, 0])
    t = zr[:, 0] - a * zq[:, 0]
    out = np.zeros((b, 3, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = a.real, -a.imag, t.real
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = a.imag, a.real, t.imag
    out[:, 2, 2] = 1.0
    return out


def _transfer(h: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Transfer errors |H q - r| for (B, 3, 3) transforms and (n, 2) points: (B, n) float64 (inf behind)."""
    x, y = q[None, :, 0], q[None, :, 1]
    w = h[:, 2, 0:1] * x + h[:, 2, 1:2] * y + h[:, 2, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_w = 1.0 / w
        u = (h[:, 0, 0:1] * x + h[:, 0, 1:2] * y + h[:, 0, 2:3]) * inv_w - r[None, :, 0]
        v = (h[:, 1, 0:1] * x + h[:, 1, 1:2] * y + h[:, 1, 2:3]) * inv_w - r[None, :, 1]
        e = np.sqrt(u * u + v * v)
    e[~(w > 1e-12) | ~np.isfinite(e)] = np.inf
    return e


def _errors(h: np.ndarray, q: np.ndarray, r: np.ndarray, back: float) -> np.ndarray:
    """Symmetric transfer errors in reference px: max(|H q - r|, back * |H^-1 r - q|), (B, n) float64.

    ``back`` = reference threshold / query threshold converts query px to reference px, so a point is an inlier
    when it is within its threshold in both images: transforms that collapse the query (every point lands
    near every other) cannot collect inliers in the reference alone."""
    adj = _adjugate(h)
    det = np.einsum("bi,bi->b", h[:, 0], adj[:, :, 0])  # det = row 0 . cofactors of row 0
    inv = adj * np.sign(det)[:, None, None]  # positive multiple of H^-1, so w keeps its sign
    return np.maximum(_transfer(h, q, r), back * _transfer(inv, r, q))


# ------------------------------------------------------------------------------------ least-squares re-fits
def _least_squares(model: str, q: np.ndarray, r: np.ndarray) -> np.ndarray | None:
    """(3, 3) least-squares transform q -> r from (m, 2) normalised points (m >= minimal size), or None."""
    m = len(q)
    if m < MIN_SAMPLE[model]:
        return None
    if model == "similarity":
        zq = q[:, 0] + 1j * q[:, 1]
        zr = r[:, 0] + 1j * r[:, 1]
        cq, cr = zq.mean(), zr.mean()
        den = float(np.sum(np.abs(zq - cq) ** 2))
        if den < 1e-12:
            return None
        a = np.sum(np.conj(zq - cq) * (zr - cr)) / den
        t = cr - a * cq
        return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag], [0.0, 0.0, 1.0]])
    if model == "affine":
        a = np.concatenate([q, np.ones((m, 1))], axis=1)
        sol, _, rank, _ = np.linalg.lstsq(a, r, rcond=None)
        if rank < 3:
            return None
        return np.vstack([sol.T, [0.0, 0.0, 1.0]])
    weights = np.ones(m)
    h = None
    for _ in range(_REWEIGHT_ITERS):
        rows = np.zeros((2 * m, 9))
        x, y, u, v = q[:, 0], q[:, 1], r[:, 0], r[:, 1]
        rows[0::2, 0], rows[0::2, 1], rows[0::2, 2] = x, y, 1.0
        rows[0::2, 6], rows[0::2, 7], rows[0::2, 8] = -u * x, -u * y, -u
        rows[1::2, 3], rows[1::2, 4], rows[1::2, 5] = x, y, 1.0
        rows[1::2, 6], rows[1::2, 7], rows[1::2, 8] = -v * x, -v * y, -v
        rows /= np.repeat(weights, 2)[:, None]
        _, sv, vt = np.linalg.svd(rows, full_matrices=False)
        if sv[-2] < 1e-12:
            return h
        h = vt[-1].reshape(3, 3)
        w = q @ h[2, :2] + h[2, 2]
        if np.any(np.abs(w) < 1e-9):
            return h
        weights = np.abs(w) / np.mean(np.abs(w))
    return h


def _normalise_h(h: np.ndarray) -> np.ndarray | None:
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return None
    return h / h[2, 2]


# -------------------------------------------------------------------------------------------------- the fit
def _lo(
    model: str, q: np.ndarray, r: np.ndarray, mask: np.ndarray, thr: float, back: float
) -> tuple[np.ndarray | None, float]:
    """Local optimisation: least-squares re-fits on the inliers (px in/out; normalised internally)."""
    best, best_loss = None, math.inf
    for _ in range(_LO_ITERS):
        if mask.sum() < MIN_SAMPLE[model]:
            break
        tq, tr = _normaliser(q[mask]), _normaliser(r[mask])
        hn = _least_squares(model, _transform_pts(tq, q[mask]), _transform_pts(tr, r[mask]))
        if hn is None:
            break
        h = _normalise_h(np.linalg.inv(tr) @ hn @ tq)
        if h is None:
            break
        e = _errors(h[None], q, r, back)[0]
        loss = float(np.sum(np.minimum(e, thr) ** 2))
        if loss >= best_loss:
            break
        best, best_loss = h, loss
        new_mask = e < thr
        if np.array_equal(new_mask, mask):
            break
        mask = new_mask
    return best, best_loss


def _ransac_numpy(
    model: str, q: np.ndarray, r: np.ndarray, thr: float, back: float, max_iters: int, confidence: float,
    seed: int, allow_reflection: bool,
) -> np.ndarray | None:
    """Best (3, 3) transform q -> r (px, (n, 2) unique correspondences) by LO-RANSAC with MSAC scoring, in
    vectorised numpy (hypotheses in batches; the reference the Numba kernel is tested against)."""
    n, s = len(q), MIN_SAMPLE[model]
    max_iters = _draw_budget(max_iters, n, s)
    rng = np.random.default_rng(seed)
    tq, tr = _normaliser(q), _normaliser(r)
    qn, rn = _transform_pts(tq, q), _transform_pts(tr, r)
    tr_inv = np.linalg.inv(tr)
    best, best_loss, best_count = None, math.inf, 0
    needed, done = max_iters, 0
    batch = int(np.clip(_BATCH_ELEMENTS // n, 64, 512))
    while done < min(needed, max_iters):
        b = min(batch, max_iters - done)
        done += b
        if n <= 64:  # samples without repeats: first s of a random permutation per row
            idx = np.argsort(rng.random((b, n)), axis=1)[:, :s]
        else:  # cheaper for large n: draw with replacement, drop rows with a repeat
            idx = rng.integers(0, n, size=(b, s))
            idx = idx[(np.diff(np.sort(idx, axis=1), axis=1) > 0).all(axis=1)]
        sq, sr = qn[idx], rn[idx]
        ok = _sample_ok(model, sq, sr, allow_reflection)
        if not ok.any():
            continue
        hn = _minimal(model, sq[ok], sr[ok])
        h = tr_inv @ hn @ tq
        scale = h[:, 2:3, 2:3]
        good = np.abs(scale[:, 0, 0]) > 1e-12
        h = h[good] / scale[good]
        if len(h) == 0:
            continue
        e = _errors(h, q, r, back)
        loss = np.sum(np.minimum(e, thr) ** 2, axis=1)
        k = int(np.argmin(loss))
        if loss[k] >= best_loss:
            continue
        best, best_loss = h[k], float(loss[k])
        h_lo, loss_lo = _lo(model, q, r, e[k] < thr, thr, back)
        if h_lo is not None and loss_lo < best_loss:
            best, best_loss = h_lo, loss_lo
        count = int(np.sum(_errors(best[None], q, r, back)[0] < thr))
        if count > best_count:
            best_count = count
            w = count / n
            if w >= 1.0:
                needed = 0
            else:
                denom = math.log(max(1e-300, 1.0 - w**s))
                needed = math.ceil(math.log(1.0 - confidence) / denom) if denom < 0 else max_iters
    return best


def _draw_budget(max_iters: int, n: int, s: int) -> int:
    """Draw cap for n correspondences and sample size s. With few correspondences there are few distinct minimal
    samples (C(8, 4) = 70): drawing 2,000 of them is wasted work, and non-matching pairs (few matches, no
    consensus) never trigger the adaptive stop."""
    return min(max_iters, max(64, 3 * math.comb(n, s)))


def _ransac(
    model: str, q: np.ndarray, r: np.ndarray, thr: float, back: float, max_iters: int, confidence: float,
    seed: int, allow_reflection: bool, impl: str,
) -> np.ndarray | None:
    """Best (3, 3) transform q -> r (px, (n, 2) unique correspondences), re-fitted on its inliers, or None.

    impl "numba": :func:`matcher.local.kernels.ransac`; "numpy": :func:`_ransac_numpy` + a final :func:`_lo`."""
    if impl == "numpy":
        h = _ransac_numpy(model, q, r, thr, back, max_iters, confidence, seed, allow_reflection)
        if h is None:
            return None
        h_ls, _ = _lo(model, q, r, _errors(h[None], q, r, back)[0] < thr, thr, back)
        return h if h_ls is None else h_ls
    from matcher.local import kernels

    out = np.empty((3, 3))
    found, _, _ = kernels.ransac(
        MODEL_IDS[model], np.ascontiguousarray(q, np.float64), np.ascontiguousarray(r, np.float64), float(thr),
        float(back), _draw_budget(max_iters, len(q), MIN_SAMPLE[model]), float(confidence), int(seed),
        bool(allow_reflection), out)
    return out if found else None


def _reject(model: str, k: int, reason: str, transform: np.ndarray | None = None,
            inliers: np.ndarray | None = None, n_inliers: int = 0, rmse: float = float("nan")) -> GeometricFit:
    return GeometricFit(
        transform=transform,
        inliers=np.zeros(k, bool) if inliers is None else inliers,
        n_inliers=n_inliers,
        reason=reason,
        model=model,
        rmse=rmse,
    )


def _check_transform(
    h: np.ndarray, frame: np.ndarray, max_scale_ratio: float, max_perspective: float, allow_reflection: bool
) -> str | None:
    """Why the transform ``h`` applied to the (4, 2) query ``frame`` is implausible, or None."""
    fh = np.concatenate([frame, np.ones((4, 1))], axis=1)
    w = fh @ h[2]
    if not (np.all(w > 1e-12) or np.all(w < -1e-12)):
        return "degenerate: extreme perspective"
    if np.abs(w).max() / np.abs(w).min() > max_perspective:
        return "degenerate: extreme perspective"
    quad = apply_transform(h, frame)
    area_q_signed = polygon_area(frame)
    area_q = abs(area_q_signed)
    d = np.roll(quad, -1, axis=0) - quad
    turns = d[:, 0] * np.roll(d[:, 1], -1) - d[:, 1] * np.roll(d[:, 0], -1)
    if not (np.all(turns > 0) or np.all(turns < 0)) or not np.all(np.isfinite(quad)):
        return "degenerate: transform collapses area"
    area_r = polygon_area(quad)
    if area_r * area_q_signed < 0 and not allow_reflection:
        return "degenerate: reflected transform"
    area_ratio = abs(area_r) / max(area_q, 1e-12)
    if area_ratio < 1e-9:
        return "degenerate: transform collapses area"
    scale = math.sqrt(area_ratio)
    if scale > max_scale_ratio or scale < 1.0 / max_scale_ratio:
        return "degenerate: extreme scale"
    # local affine part at the frame centre: anisotropy (squash) as extreme as the allowed scale change
    c = frame.mean(axis=0)
    eps = 0.5 * math.sqrt(area_q)
    jac = np.stack([apply_transform(h, c + [eps, 0.0])[0] - apply_transform(h, c - [eps, 0.0])[0],
                    apply_transform(h, c + [0.0, eps])[0] - apply_transform(h, c - [0.0, eps])[0]], axis=1)
    sv = np.linalg.svd(jac, compute_uv=False)
    if sv[1] <= 1e-12 or sv[0] / sv[1] > max_scale_ratio:
        return "degenerate: extreme scale"
    return None


def fit_geometry(
    pts_q: np.ndarray,
    pts_r: np.ndarray,
    *,
    model: str = "homography",
    threshold_px: float,
    query_threshold_px: float | None = None,
    max_iters: int = 2000,
    confidence: float = 0.999,
    seed: int = 0,
    min_inliers: int = 6,
    max_scale_ratio: float = 12.0,
    max_perspective: float = 3.0,
    dedup_px: float = 1.0,
    query_frame: np.ndarray | None = None,
    allow_reflection: bool = False,
    impl: str = "numba",
) -> GeometricFit:
    """Fit ``model`` mapping query px -> reference px to K tentative correspondences.

    pts_q, pts_r: (K, 2) float, matched query / reference points (px). An inlier is within ``threshold_px``
    reference px of its mapped query point AND within ``query_threshold_px`` (default ``threshold_px``) query px
    of its inversely mapped reference point (symmetric transfer error). query_frame: (4, 2) query frame corners (see :func:`frame_quad`) used for
    the plausibility checks (perspective, convexity, scale); default the inliers' bounding box.
    Reflections are rejected unless ``allow_reflection`` (mirrored copies are handled by flipping the query
    points first, see ``matcher.local.evidence``). Never returns None: a rejected fit has ``reason`` set, e.g.
    "too few matches: 3 < 4 for homography", "too few matches: 5 unique locations < 6", "degenerate: points almost identical", "degenerate: collinear
    inliers", "too few inliers: 4 < 6", "degenerate: extreme scale", "degenerate: extreme perspective",
    "degenerate: transform collapses area". Deterministic for a given ``seed``.
    impl: "numba" (default, :func:`matcher.local.kernels.ransac`, one hypothesis at a time) or "numpy" (the
    vectorised reference, hypotheses in batches; ~7x slower); the two draw different random samples.
    """
    if model not in MIN_SAMPLE:
        raise ValueError(f"unknown geometric model {model!r}; known: {', '.join(sorted(MIN_SAMPLE))}")
    if impl not in IMPLS:
        raise ValueError(f"unknown RANSAC implementation {impl!r}; known: {', '.join(IMPLS)}")
    q = np.asarray(pts_q, np.float64).reshape(-1, 2)
    r = np.asarray(pts_r, np.float64).reshape(-1, 2)
    if len(q) != len(r):
        raise ValueError(f"point arrays differ in length: {len(q)} query vs {len(r)} reference")
    if threshold_px <= 0 or (query_threshold_px is not None and query_threshold_px <= 0):
        raise ValueError(f"thresholds must be > 0, got {threshold_px}, {query_threshold_px}")
    k, s = len(q), MIN_SAMPLE[model]
    if k < s:
        return _reject(model, k, f"too few matches: {k} < {s} for {model}")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(r))):
        raise ValueError("point arrays contain non-finite values")

    # unique correspondences: duplicates (same query cell and same reference cell) are sampled/scored once
    cells = np.floor(np.concatenate([q, r], axis=1) / dedup_px).astype(np.int64)
    first = _first_of_rows(cells)
    uq, ur = q[first], r[first]
    n_unique = min(unique_count(q, dedup_px), unique_count(r, dedup_px))
    if n_unique < s or min(_spread(uq)[0], _spread(ur)[0]) < _MIN_SPREAD_PX:
        return _reject(model, k, "degenerate: points almost identical")
    if n_unique < min_inliers:  # no fit could be accepted: skip RANSAC
        return _reject(model, k, f"too few matches: {n_unique} unique locations < {min_inliers}")
    if model != "similarity" and (_is_collinear(uq) or _is_collinear(ur)):
        return _reject(model, k, "degenerate: collinear inliers")

    back = threshold_px / (query_threshold_px or threshold_px)
    h = _ransac(model, uq, ur, threshold_px, back, max_iters, confidence, seed, allow_reflection, impl)
    if h is None:
        return _reject(model, k, "no consistent transform")
    inliers = _errors(h[None], q, r, back)[0] < threshold_px
    err = _transfer(h[None], q, r)[0]
    n_inl = min(unique_count(q[inliers], dedup_px), unique_count(r[inliers], dedup_px))
    rmse = float(np.sqrt(np.mean(err[inliers] ** 2))) if inliers.any() else float("nan")
    if n_inl < max(min_inliers, s):
        return _reject(model, k, f"too few inliers: {n_inl} < {max(min_inliers, s)}", h, inliers, n_inl, rmse)
    drop = s - 2
    if model != "similarity" and (_is_collinear(q[inliers], drop) or _is_collinear(r[inliers], drop)):
        return _reject(model, k, "degenerate: collinear inliers", h, inliers, n_inl, rmse)
    if query_frame is None:
        lo, hi = q[inliers].min(axis=0), q[inliers].max(axis=0)
        query_frame = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    bad = _check_transform(h, np.asarray(query_frame, np.float64), max_scale_ratio, max_perspective,
                           allow_reflection)
    if bad is not None:
        return _reject(model, k, bad, h, inliers, n_inl, rmse)
    return GeometricFit(transform=h, inliers=inliers, n_inliers=n_inl, reason=None, model=model, rmse=rmse)
