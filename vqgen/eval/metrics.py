"""The quality numbers of `vqgen evaluate` beyond those training reports too (``vqgen.measures``): SSIM,
Fréchet distance, KID, improved precision and recall."""

from __future__ import annotations

import torch



# ----------------------------------------------------------------------------- image similarity


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """(size, size) Gaussian kernel summing to 1."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_per_image(
    x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of each image pair (B, C, H, W) -> (B,), channels averaged.

    Local statistics use a Gaussian window over the 'valid' region only; images smaller than
    the window use a window as large as the image (odd size).
    """
    size = min(window_size, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2
    channels = x.shape[1]
    window = gaussian_window(size, sigma).to(x.device, torch.float32).expand(channels, 1, size, size)
    x, y = x.float(), y.float()

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, window, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


# ----------------------------------------------------------------------------- distribution distances


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of (N, d) features, N >= 2."""
    f = features.double()
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.t() @ centred / (f.shape[0] - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (tiny negative eigenvalues from rounding -> 0)."""
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.t()) / 2)
    return (vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.t()


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^{1/2}) in float64.

    Tr((cov1 cov2)^{1/2}) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix cov1^{1/2} cov2 cov1^{1/2} (same spectrum as cov1 cov2), which stays
    stable when the covariances are singular (fewer samples than feature dimensions).
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.t()) / 2).clamp_min(0).sqrt().sum()
    distance = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_sqrt
    return max(float(distance), 0.0)


def frechet_distance_features(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, d) feature sets."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y / d + 1)^3, the KID kernel."""
    return (a @ b.t() / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 estimate with the cubic polynomial kernel (diagonal terms left out)."""
    x, y = x.double(), y.double()
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_xx + term_yy - 2 * k_xy.mean())


def kernel_inception_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID: unbiased MMD^2 averaged over random subsets (without replacement within a subset).

    Returns (mean, std over subsets); the subset size is capped by the smaller set.
    """
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"need at least 2 feature vectors per set for KID, got {size}")
    values = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        pick_x = torch.randperm(x.shape[0], generator=generator)[:size]
        pick_y = torch.randperm(y.shape[0], generator=generator)[:size]
        values[s] = mmd2_unbiased(x[pick_x], y[pick_y])
    std = float(values.std()) if subsets > 1 else 0.0
    return float(values.mean()), std


# ----------------------------------------------------------------------------- precision and recall


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance of each of the (N, d) points to its k-th nearest other point (N,), computed in row chunks."""
    if features.shape[0] <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {features.shape[0]}")
    nearest = [torch.cdist(rows, features).topk(k + 1, dim=1, largest=False).values for rows in features.split(chunk)]
    return torch.cat(nearest)[:, k]  # column 0 is the point itself


def inside_manifold(
    queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """For each query: does it lie in some ball around ``points`` of the matching ``radii``? -> (M,) bool."""
    return torch.cat([(torch.cdist(rows, points) <= radii[None, :]).any(1) for rows in queries.split(chunk)])


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of (N, d) ``fake`` against (M, d) ``real``.

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour. Precision: share of fake points inside the real manifold (are samples realistic?);
    recall: share of real points inside the fake manifold (is the variety covered?). Distances
    are computed ``chunk`` rows at a time, so 10k x 10k never holds the full distance matrix.
    """
    real, fake = real.double(), fake.double()
    precision = inside_manifold(fake, real, knn_radii(real, k, chunk), chunk).double().mean()
    recall = inside_manifold(real, fake, knn_radii(fake, k, chunk), chunk).double().mean()
    return float(precision), float(recall)
