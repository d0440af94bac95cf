import pytest
import torch

from vqgen.models.quantizer import VectorQuantizer, code_distances, kmeans, perplexity


def quantizer(**kwargs) -> VectorQuantizer:
    defaults = dict(num_codes=8, dim=4, ema=False, kmeans_init=False, restart_dead=False)
    return VectorQuantizer(**{**defaults, **kwargs})


def as_map(vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (1, D, 1, N) so that each vector is one latent position."""
    return vectors.t()[None, :, None, :].contiguous()


def test_code_distances_are_squared_distances_less_the_row_norm():
    x, e = torch.randn(50, 6), torch.randn(9, 6)
    assert torch.allclose(code_distances(x, e) + x.pow(2).sum(1, keepdim=True), torch.cdist(x, e) ** 2, atol=1e-4)


def test_nearest_code_is_chosen():
    torch.manual_seed(0)
    q = quantizer().eval()
    targets = torch.tensor([3, 0, 7, 7, 1, 5])
    z = q.codebook.data[targets] + 0.01 * torch.randn(len(targets), 4)
    out = q(as_map(z))
    assert out.indices.flatten().tolist() == targets.tolist()
    assert torch.allclose(out.quantized[0, :, 0, :].t(), q.codebook.data[targets])


def test_random_inputs_get_the_argmin_code():
    torch.manual_seed(1)
    q = quantizer(num_codes=32, dim=5).eval()
    z = torch.randn(2, 5, 3, 4)
    brute = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 5), q.codebook.data).argmin(1)
    assert torch.equal(q.encode(z).flatten(), brute)


def test_straight_through_passes_gradients_unchanged():
    torch.manual_seed(2)
    q = quantizer().train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    weights = torch.randn(2, 4, 3, 3)
    (q(z).quantized * weights).sum().backward()
    assert torch.allclose(z.grad, weights)


def test_codebook_loss_moves_codes_and_commitment_moves_encoder():
    torch.manual_seed(3)
    q = quantizer().train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    out.codebook_loss.backward(retain_graph=True)
    assert z.grad is None or torch.count_nonzero(z.grad) == 0
    assert torch.count_nonzero(q.codebook.grad) > 0
    q.codebook.grad = None
    out.commitment.backward()
    assert q.codebook.grad is None or torch.count_nonzero(q.codebook.grad) == 0
    assert torch.count_nonzero(z.grad) > 0


def test_beta_weights_the_commitment_term():
    torch.manual_seed(4)
    q = quantizer(beta=0.25).train()
    out = q(torch.randn(2, 4, 3, 3))
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment)
    assert out.codebook_loss.item() > 0


def test_ema_has_no_codebook_loss_and_no_codebook_gradient():
    q = quantizer(ema=True)
    assert not q.codebook.requires_grad
    assert q(torch.randn(1, 4, 2, 2)).codebook_loss.item() == 0.0


def test_ema_moves_codes_toward_assigned_vectors():
    torch.manual_seed(5)
    q = quantizer(ema=True, decay=0.5).train()
    q._set_codes(torch.arange(8), 3 * torch.randn(8, 4))
    target = q.codebook.data[2] + 0.3
    z = target.expand(6, 4) + 0.01 * torch.randn(6, 4)
    assert (q.encode(as_map(z)) == 2).all()
    before = (q.codebook.data[2] - z.mean(0)).norm()
    for _ in range(5):
        q(as_map(z))
    after = (q.codebook.data[2] - z.mean(0)).norm()
    assert after < 0.1 * before
    untouched = q.codebook.data[5].clone()
    q(as_map(z))
    # an unassigned code stays put: its cluster size and sum decay together (up to smoothing)
    assert torch.allclose(q.codebook.data[5], untouched, rtol=1e-3, atol=1e-3)


def test_ema_update_follows_the_laplace_smoothed_formula():
    torch.manual_seed(6)
    q = quantizer(ema=True, decay=0.9, eps=1e-5).train()
    n0, m0 = q.cluster_size.clone(), q.embed_sum.clone()
    z = torch.randn(10, 4)
    idx = q.encode(as_map(z)).flatten()
    q(as_map(z))
    counts = torch.bincount(idx, minlength=8).float()
    sums = torch.zeros(8, 4).index_add_(0, idx, z)
    n = 0.9 * n0 + 0.1 * counts
    m = 0.9 * m0 + 0.1 * sums
    smoothed = (n + 1e-5) / (n.sum() + 8e-5) * n.sum()
    assert torch.allclose(q.codebook.data, m / smoothed[:, None], atol=1e-5)


def test_dead_codes_are_reseeded_from_encoder_outputs():
    torch.manual_seed(7)
    q = quantizer(ema=True, restart_dead=True, restart_every=1, dead_threshold=0.6, decay=0.5).train()
    z = torch.randn(16, 4) * 0.01 + q.codebook.data[0]  # everything maps to code 0
    q(as_map(z))
    # codes 1..7 got no assignments, their usage fell below the threshold and they were re-seeded
    reseeded = q.codebook.data[1:]
    distances = torch.cdist(reseeded, z)
    assert (distances.min(1).values < 1e-5).all()
    assert q.dead_codes() == 0


def test_kmeans_init_places_codes_on_data_clusters():
    torch.manual_seed(8)
    centres = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0]])
    z = centres.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 4)
    q = quantizer(num_codes=4, ema=True, kmeans_init=True).train()
    assert not bool(q.initialized)
    q(as_map(z))
    assert bool(q.initialized)
    nearest = torch.cdist(centres, q.codebook.data).min(1).values
    assert (nearest < 0.1).all()


def test_kmeans_function_recovers_centres():
    torch.manual_seed(9)
    centres = torch.randn(3, 2) * 10
    x = centres.repeat_interleave(30, 0) + 0.1 * torch.randn(90, 2)
    found = kmeans(x, 3, iters=20)
    assert (torch.cdist(centres, found).min(1).values < 0.2).all()


def test_cosine_codes_are_unit_vectors_and_lookup_uses_angles():
    torch.manual_seed(10)
    q = quantizer(cosine=True, ema=True).train()
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    assert torch.allclose(q.codebook.data.norm(dim=1), torch.ones(8), atol=1e-5)
    # scaling an input does not change its code
    assert torch.equal(q.encode(z), q.encode(z * 7.0))
    assert out.quantized.shape == z.shape


def test_low_dimensional_codebook_projects_in_and_out():
    torch.manual_seed(11)
    q = quantizer(dim=16, codebook_dim=4).train()
    assert q.codebook.shape == (8, 4)
    z = torch.randn(2, 16, 3, 3, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == z.shape
    (out.quantized.sum() + out.loss).backward()
    assert torch.count_nonzero(z.grad) > 0
    assert q.project_in.weight.grad is not None and q.project_out.weight.grad is not None
    assert torch.allclose(q.decode_indices(out.indices), out.quantized, atol=1e-5)


def test_distances_and_updates_stay_float32_under_autocast():
    torch.manual_seed(12)
    q = quantizer(ema=True).train()
    z = torch.randn(2, 4, 3, 3)
    expected = q.encode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z.bfloat16())
    assert q.codebook.dtype == torch.float32 and q.embed_sum.dtype == torch.float32
    assert torch.equal(out.indices, expected) or (out.indices != expected).float().mean() < 0.2


@pytest.mark.parametrize("counts,expected", [([5, 5, 5, 5], 4.0), ([10, 0, 0, 0], 1.0)])
def test_perplexity_of_histograms(counts, expected):
    assert perplexity(torch.tensor(counts)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- dead codes at scale


def test_default_rule_restarts_only_unused_codes_of_a_large_codebook():
    """K=8192 and 196 rows a step (B=4 of 7x7): 500 codes in use, each about 16x the mean count."""
    from vqgen.models.vqvae import VQVAEConfig

    torch.manual_seed(13)
    k, rows, used = 8192, 4 * 7 * 7, 500
    threshold = VQVAEConfig().dead_threshold
    # decay 0.9 so that never-used codes fade in a few steps; they are dead at the first check after that
    first = next(t for t in range(5, 100, 5) if 0.9**t < threshold)
    q = quantizer(num_codes=k, ema=True, restart_dead=True, dead_threshold=threshold, decay=0.9, restart_every=5)
    q.train()._set_codes(torch.arange(k), torch.randn(k, 4))
    restarted: list[tuple[int, set[int]]] = []
    set_codes = q._set_codes
    q._set_codes = lambda which, vectors: (restarted.append((int(q.steps), set(which.tolist()))), set_codes(which, vectors))
    old_rule: list[int] = []  # codes below the old absolute threshold (1.0 use per step) at each check
    restart = q._restart_dead_codes
    q._restart_dead_codes = lambda flat: (old_rule.append(int((q.usage < 1.0).sum())), restart(flat))[1]
    vectors = q.codebook.data[:used].clone()
    for step in range(first):
        q(as_map(vectors[(step * rows + torch.arange(rows)) % used]))
    # the never-used codes fell below the threshold x the mean; no code in use was touched
    assert [step for step, _ in restarted] == [first]
    assert restarted[0][1] == set(range(used, k))
    assert old_rule[0] == k  # the old rule would have re-seeded every code at the first check already


def test_restarts_stop_at_the_horizon_and_the_horizon_is_saved():
    torch.manual_seed(14)

    def restart_steps(horizon: int | None) -> tuple[list[int], VectorQuantizer]:
        q = quantizer(ema=True, restart_dead=True, restart_every=1, dead_threshold=100.0, restart_stop=0.5).train()
        if horizon is not None:
            q.set_restart_horizon(horizon)
        steps = []
        restart = q._restart_dead_codes
        q._restart_dead_codes = lambda flat: (steps.append(int(q.steps)), restart(flat))[1]
        for _ in range(8):
            q(torch.randn(1, 4, 2, 2))
        return steps, q

    steps, q = restart_steps(10)
    assert steps == [1, 2, 3, 4, 5]  # restart_stop 0.5 of 10 steps
    assert int(q.state_dict()["restart_until"]) == 5
    assert restart_steps(None)[0] == list(range(1, 9))  # never set: until the end


def test_a_checkpoint_from_before_the_restart_horizon_loads(tmp_path):
    from vqgen.formats.checkpoints import load_vqvae
    from vqgen.formats.files import save_vqgen_file
    from vqgen.models.vqvae import VQVAE, VQVAEConfig

    model = VQVAE(VQVAEConfig(hidden_channels=16, res_channels=8, num_codes=16, code_dim=8, kmeans_init=False))
    tensors = {k: v for k, v in model.state_dict().items() if k != "quantizer.restart_until"}
    config = {k: v for k, v in model.cfg.to_dict().items() if k != "restart_stop"}
    save_vqgen_file(tmp_path / "old.safetensors", tensors, {"kind": "vqvae", "config": config})
    loaded, _ = load_vqvae(tmp_path / "old.safetensors")
    assert loaded.cfg.restart_stop == 1.0  # restarts went on until the end
    assert int(loaded.quantizer.restart_until) == -1
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)


# ----------------------------------------------------------------------------- memory at scale


def test_blocked_nearest_codes_and_kmeans_match_the_whole_matrix():
    from vqgen.models.quantizer import nearest_codes

    torch.manual_seed(15)
    x, codes = torch.randn(203, 3), torch.randn(16, 3)
    assert torch.equal(nearest_codes(x, codes, block_rows=7), code_distances(x, codes).argmin(1))
    whole = kmeans(x, 16, iters=5, generator=torch.Generator().manual_seed(0))
    blocked = kmeans(x, 16, iters=5, generator=torch.Generator().manual_seed(0), block_rows=7)
    assert torch.equal(whole, blocked)


def test_kmeans_init_takes_at_most_64_rows_per_code(monkeypatch):
    import vqgen.models.quantizer as qmod

    seen: dict[str, int] = {}
    picked: list[torch.Tensor] = []
    real_kmeans, real_pick = qmod.kmeans, getattr(qmod.dist, "gather_picked_rows", None)

    def counting_kmeans(x, k, iters, *args, **kwargs):
        seen["kmeans"] = x.shape[0]
        picked.append(x)
        return real_kmeans(x, k, iters, *args, **kwargs)

    def counting_pick(t, pick):
        seen["picked"] = len(pick)
        return real_pick(t, pick)

    monkeypatch.setattr(qmod, "kmeans", counting_kmeans)
    monkeypatch.setattr(qmod.dist, "gather_picked_rows", counting_pick, raising=False)
    torch.manual_seed(16)
    z = torch.randn(1000, 4)
    q = quantizer(num_codes=4, ema=True, kmeans_init=True).train()
    q(as_map(z))
    assert seen == {"kmeans": 4 * 64, "picked": 4 * 64}
    # k-means saw distinct rows of the batch
    matches = torch.cdist(picked[0], z).argmin(1)
    assert torch.equal(z[matches], picked[0]) and len(set(matches.tolist())) == len(matches)
