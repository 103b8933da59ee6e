"""Problem generators shared by the OT tests."""

import torch

from espnet_gmot.ot import cosine_cost, structure_cost, temporal_cost


def make_problem(n, m, kind, seed=0, dim=8, dtype=torch.float64):
    """One unpadded problem: ``(cost, source_structure, target_structure)``.

    ``random``: unrelated random features. ``monotone``: frames that follow
    their tokens in order plus noise, with the temporal prior added, the shape
    of the problems the ASR model solves.
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(1, m, dim, generator=gen, dtype=dtype)
    if kind == "random":
        frames = torch.randn(1, n, dim, generator=gen, dtype=dtype)
    elif kind == "monotone":
        owner = (torch.arange(n) * m // n).clamp(max=m - 1)
        noise = 0.5 * torch.randn(1, n, dim, generator=gen, dtype=dtype)
        frames = tokens[:, owner] + noise
    else:
        raise ValueError(kind)
    n_len, m_len = torch.tensor([n]), torch.tensor([m])
    cost = cosine_cost(frames, tokens, n_len, m_len)
    if kind == "monotone":
        cost = cost + 0.1 * temporal_cost(n_len, m_len, dtype=dtype)
    return cost[0], structure_cost(frames, n_len)[0], structure_cost(tokens, m_len)[0]


def pad_batch(problems, pad_value=float("nan")):
    """Stack unpadded problems into a padded batch, poisoning every padded cell."""
    n_max = max(p[0].shape[0] for p in problems)
    m_max = max(p[0].shape[1] for p in problems)
    batch = len(problems)
    dtype = problems[0][0].dtype
    cost = torch.full((batch, n_max, m_max), pad_value, dtype=dtype)
    source = torch.full((batch, n_max, n_max), pad_value, dtype=dtype)
    target = torch.full((batch, m_max, m_max), pad_value, dtype=dtype)
    n_len, m_len = [], []
    for b, (c, c1, c2) in enumerate(problems):
        n, m = c.shape
        cost[b, :n, :m], source[b, :n, :n], target[b, :m, :m] = c, c1, c2
        n_len.append(n)
        m_len.append(m)
    return cost, source, target, torch.tensor(n_len), torch.tensor(m_len)


def stiff_batch(dtype=torch.float64, kind="monotone"):
    """Four items of 9-60 frames and 4-20 tokens, padded: a batch whose balanced
    solves with the temporal prior are stiff."""
    shapes = [(60, 12), (35, 7), (48, 20), (9, 4)]
    problems = [make_problem(n, m, kind, seed=s, dtype=dtype) for s, (n, m) in enumerate(shapes)]
    return pad_batch(problems)


def pot_sinkhorn_plan(cost, epsilon):
    """POT's log-domain Sinkhorn plan of one float64 ``(n, m)`` cost with uniform
    masses, run to a marginal error of 1e-13: the oracle of the OT tests."""
    import ot

    n, m = cost.shape
    return ot.sinkhorn(torch.full((n,), 1 / n, dtype=torch.float64),
                       torch.full((m,), 1 / m, dtype=torch.float64), cost, epsilon,
                       method="sinkhorn_log", stopThr=1e-13, numItermax=100000)


def speech_like_batch(seed=0, n_range=(120, 300), m_range=(12, 40), dim=32):
    """Frames that follow their tokens in order (neighbouring frames similar)."""
    gen = torch.Generator().manual_seed(seed)
    n_len = torch.randint(n_range[0], n_range[1] + 1, (3,), generator=gen)
    m_len = torch.randint(m_range[0], m_range[1] + 1, (3,), generator=gen)
    n_max, m_max = int(n_len.max()), int(m_len.max())
    tokens = torch.randn(3, m_max, dim, generator=gen)
    frames = torch.full((3, n_max, dim), float("nan"))
    for b in range(3):
        n, m = int(n_len[b]), int(m_len[b])
        owner = (torch.arange(n) * m // n).clamp(max=m - 1)
        frames[b, :n] = tokens[b, owner] + 1.5 * torch.randn(n, dim, generator=gen)
    return frames, tokens, n_len, m_len


def tot_paper_setting(seed=1):
    """epsilon 0.01 (the TOT paper's) against the prior 0.5 d^2: one token's
    shift costs 50 epsilon, rows are nearly one-hot."""
    frames, tokens, n_len, m_len = speech_like_batch(seed=seed)
    cost = cosine_cost(frames, tokens, n_len, m_len) + 0.5 * temporal_cost(
        n_len, m_len, frames.size(1), tokens.size(1)
    )
    return cost, n_len, m_len
