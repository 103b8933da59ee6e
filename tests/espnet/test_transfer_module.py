"""The transfer branch: the three methods, padding, losses and fusion by hand."""

import dataclasses
import inspect
import math

import pytest
import torch

from espnet_gmot.ot import (
    SinkhornSettings,
    cosine_cost,
    fused_gromov_wasserstein,
    sinkhorn,
    structure_cost,
    temporal_cost,
)
from espnet_gmot.transfer import OTKnowledgeTransfer
from espnet_gmot.transfer.module import TRANSFER_DEFAULTS, TRANSFER_SOLVER_SETTINGS

DIM_A, DIM_T = 12, 16


def make_module(**kwargs):
    torch.manual_seed(0)
    return OTKnowledgeTransfer(DIM_A, plm_dim=DIM_T, **kwargs).double()


def make_item(la, lt, seed):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(la, DIM_A, generator=gen, dtype=torch.float64),
        torch.randn(lt, DIM_T, generator=gen, dtype=torch.float64),
    )


def pad(items):
    la = max(a.size(0) for a, _ in items)
    lt = max(z.size(0) for _, z in items)
    acoustic = torch.full((len(items), la, DIM_A), float("nan"), dtype=torch.float64)
    plm = torch.full((len(items), lt, DIM_T), float("nan"), dtype=torch.float64)
    for b, (a, z) in enumerate(items):
        acoustic[b, : a.size(0)] = a
        plm[b, : z.size(0)] = z
    lengths = torch.tensor([a.size(0) for a, _ in items]), torch.tensor([z.size(0) for _, z in items])
    return acoustic, plm, *lengths


def losses_for(module, acoustic, plm, la, lt):
    # Padded acoustic frames would be finite encoder outputs in practice; zero
    # them here so the adapter sees numbers, the OT masks do the rest.
    acoustic = torch.nan_to_num(acoustic)
    return module.transfer_losses(module.adapt(acoustic), la, plm, lt)


@pytest.mark.parametrize(
    "gw_weight, temporal_weight", [(0.0, 0.0), (0.0, 0.5), (0.02, 0.5)]
)
def test_plans_reduce_exactly_to_ot_bert_tot_cakt_and_gm_ot(gw_weight, temporal_weight):
    module = make_module(gw_weight=gw_weight, temporal_weight=temporal_weight, epsilon=0.1)
    acoustic, plm, la, lt = pad([make_item(20, 6, 0), make_item(13, 8, 1)])
    acoustic = torch.nan_to_num(acoustic)
    out = losses_for(module, acoustic, plm, la, lt)
    adapted = module.adapt(acoustic)
    node = cosine_cost(adapted, plm, la, lt)
    settings = module.settings
    kwargs = dict(epsilon=0.1, tol=settings.tol, overrelaxation=settings.overrelaxation)
    if gw_weight == 0 and temporal_weight == 0:  # OT-BERT: plain entropic OT, cosine cost
        expected = sinkhorn(node, la, lt, max_iter=settings.max_iter, **kwargs)
    elif gw_weight == 0:  # TOT-CAKT: cost C + beta d^2 (TOT eq. 19)
        cost = node + temporal_weight * temporal_cost(la, lt, dtype=node.dtype)
        expected = sinkhorn(cost, la, lt, max_iter=settings.max_iter, **kwargs)
    else:  # GM-OT: FGW with M = D_AL + rho / (1 - alpha) T
        cost = node + temporal_weight / (1 - gw_weight) * temporal_cost(la, lt, dtype=node.dtype)
        expected = fused_gromov_wasserstein(
            cost, structure_cost(adapted, la), structure_cost(plm, lt), la, lt,
            gw_weight=gw_weight, outer_iter=module.outer_iter, inner_iter=settings.max_iter,
            **kwargs,
        )
    assert torch.equal(out.plan, expected.plan)
    assert torch.allclose(out.transport, expected.value.mean(), atol=1e-14)


def test_padded_batch_equals_per_utterance_results():
    module = make_module(gw_weight=0.02, temporal_weight=0.5)
    items = [make_item(25, 7, 0), make_item(9, 4, 1), make_item(17, 11, 2)]
    acoustic, plm, la, lt = pad(items)
    batched = losses_for(module, acoustic, plm, la, lt)
    aligns, transports = [], []
    for b, (a, z) in enumerate(items):
        alone = losses_for(module, a[None], z[None], la[b : b + 1], lt[b : b + 1])
        n, m = a.size(0), z.size(0)
        assert torch.allclose(batched.plan[b, :n, :m], alone.plan[0], atol=1e-10)
        assert batched.plan[b, n:].abs().sum() == 0 and batched.plan[b, :, m:].abs().sum() == 0
        aligns.append(alone.align)
        transports.append(alone.transport)
    assert torch.allclose(batched.align, torch.stack(aligns).mean(), atol=1e-10)
    assert torch.allclose(batched.transport, torch.stack(transports).mean(), atol=1e-10)


def test_projection_and_alignment_loss_by_hand():
    module = make_module(gw_weight=0.0, temporal_weight=0.5)
    a, z = make_item(10, 5, 3)
    out = losses_for(module, a[None], z[None], torch.tensor([10]), torch.tensor([5]))
    plan = out.plan[0]
    adapted = module.adapt(a)
    b = plan.sum(0)  # the token masses 1/5, up to the solver's marginal error
    assert torch.allclose(b, torch.full((5,), 0.2, dtype=torch.float64), atol=1e-3)
    projected = torch.diag(1 / b) @ plan.T @ adapted  # TOT eq. 20
    cosines = torch.nn.functional.cosine_similarity(projected, z, dim=-1)
    expected = (1 - cosines[1:4]).sum()  # eq. 21: tokens 2..lt-1, no [CLS]/[SEP]
    assert torch.allclose(out.align, expected, atol=1e-12)
    with_special = make_module(gw_weight=0.0, temporal_weight=0.5, align_special_tokens=True)
    out_all = losses_for(with_special, a[None], z[None], torch.tensor([10]), torch.tensor([5]))
    assert torch.allclose(out_all.align, (1 - cosines).sum(), atol=1e-12)


def test_fusion_by_hand():
    module = make_module(fusion_scale=0.3)
    a, _ = make_item(7, 2, 4)
    h_a = module.adapter(a)
    ln_in = torch.nn.functional.layer_norm(h_a, (DIM_T,))
    ln_out = torch.nn.functional.layer_norm(module.fusion_proj(ln_in), (DIM_A,))
    assert torch.allclose(module(a), a + 0.3 * ln_out, atol=1e-12)  # TOT eq. 22


def test_gradients_reach_the_adapter_and_stay_finite():
    module = make_module(gw_weight=0.02, temporal_weight=0.5)
    acoustic, plm, la, lt = pad([make_item(20, 6, 0), make_item(8, 5, 1)])
    acoustic = torch.nan_to_num(acoustic).requires_grad_(True)
    out = module.transfer_losses(module.adapt(acoustic), la, plm, lt)
    (out.align + out.transport).backward()
    assert module.adapter.weight.grad.abs().sum() > 0
    assert torch.isfinite(module.adapter.weight.grad).all()
    assert torch.isfinite(acoustic.grad).all()
    assert acoustic.grad[1, 8:].abs().sum() == 0  # padded frames get no gradient


def test_fewer_frames_than_tokens_and_empty_transcript_are_finite():
    module = make_module(gw_weight=0.02, temporal_weight=0.5)
    # item 0: 3 frames for 9 tokens; item 1: empty transcript = [CLS] [SEP] only.
    acoustic, plm, la, lt = pad([make_item(3, 9, 0), make_item(12, 2, 1)])
    out = losses_for(module, acoustic, plm, la, lt)
    assert torch.isfinite(out.align) and torch.isfinite(out.transport)
    alone_empty = losses_for(module, acoustic[1:2], plm[1:2, :2], la[1:2], lt[1:2])
    assert alone_empty.align == 0  # no content token, nothing to align


def test_plm_dim_mismatch_names_the_key():
    module = make_module()
    a, _ = make_item(5, 3, 0)
    with pytest.raises(ValueError, match="set plm_dim to 7"):
        module.transfer_losses(module.adapt(a[None]), torch.tensor([5]),
                               torch.randn(1, 3, 7, dtype=torch.float64), torch.tensor([3]))


OUT_OF_RANGE = [
    ("plm_dim", 0), ("gw_weight", 1.0), ("gw_weight", -0.1), ("gw_weight", math.nan),
    ("temporal_weight", -1.0), ("temporal_weight", math.nan), ("temporal_weight", math.inf),
    ("epsilon", 0.0), ("epsilon", math.inf), ("epsilon", math.nan),
    ("fusion_scale", -1.0), ("fusion_scale", math.nan), ("outer_iter", 0), ("inner_iter", 0),
    ("tol", -1e-6), ("tol", math.nan), ("overrelaxation", 0.5), ("overrelaxation", 2.0),
    ("overrelaxation", math.nan), ("check_every", 0), ("newton_steps", -1),
]


@pytest.mark.parametrize("name, value", OUT_OF_RANGE)
def test_every_setting_out_of_range_is_named_with_its_value(name, value):
    with pytest.raises(ValueError, match=rf"^conf\.{name} must .*, got {value}$"):
        OTKnowledgeTransfer(4, **{"plm_dim": 4, name: value}, key_prefix="conf.")


def test_bad_hyper_parameters_are_named():
    with pytest.raises(ValueError, match="gw_weight must lie in"):
        OTKnowledgeTransfer(4, plm_dim=4, gw_weight=1.0)
    with pytest.raises(ValueError, match="temporal_weight must be"):
        OTKnowledgeTransfer(4, plm_dim=4, temporal_weight=-1.0)
    with pytest.raises(ValueError, match="gradient must be one of"):
        OTKnowledgeTransfer(4, plm_dim=4, gradient="implicit")
    with pytest.raises(ValueError, match="acoustic_dim must be >= 1"):
        OTKnowledgeTransfer(0, plm_dim=4)
    # the edges of each range are accepted
    OTKnowledgeTransfer(4, plm_dim=4, gw_weight=0.0, temporal_weight=0.0, fusion_scale=0.0,
                        tol=0.0, overrelaxation=1.0, outer_iter=1, inner_iter=1, newton_steps=0)


def test_plan_stats_on_known_plans():
    diagonal = torch.zeros(1, 4, 4)
    diagonal[0, range(4), range(4)] = 0.25
    reversed_plan = diagonal.flip(2)
    uniform = torch.full((1, 4, 4), 1 / 16)
    lengths = torch.tensor([4])
    stats = OTKnowledgeTransfer._plan_stats
    assert stats(diagonal, lengths, lengths)["ot_monotonicity"] == 1.0
    assert stats(reversed_plan, lengths, lengths)["ot_monotonicity"] == 0.0
    assert torch.isclose(stats(uniform, lengths, lengths)["ot_entropy"], torch.tensor(1.0))
    assert torch.isclose(stats(diagonal, lengths, lengths)["ot_entropy"], torch.tensor(0.5))


# --- mixed precision (issue 15) ----------------------------------------------------


def make_float_batch(la, lt, dim_t=DIM_T, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    acoustic = torch.randn(2, la, DIM_A, generator=gen)
    plm = torch.randn(2, lt, dim_t, generator=gen)
    plm[1, lt - 3 :] = float("nan")  # padded tokens poisoned
    lengths = torch.tensor([la, la - 7]), torch.tensor([lt, lt - 3])
    return acoustic.to(device), plm.to(device), lengths[0].to(device), lengths[1].to(device)


@pytest.mark.parametrize("gw_weight", [0.0, 0.02])
def test_bf16_autocast_runs_the_ot_in_float32_with_finite_losses_and_gradients(gw_weight):
    torch.manual_seed(0)
    module = OTKnowledgeTransfer(DIM_A, plm_dim=DIM_T, gw_weight=gw_weight, temporal_weight=0.5)
    acoustic, plm, la, lt = make_float_batch(60, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adapted = module.adapt(acoustic)
        assert adapted.dtype == torch.bfloat16  # the adapter itself runs in bf16
        out = module.transfer_losses(adapted, la, plm.to(torch.bfloat16), lt)
    assert out.plan.dtype == torch.float32
    assert out.align.dtype == out.transport.dtype == torch.float32
    assert torch.isfinite(out.align) and torch.isfinite(out.transport)
    (out.align + out.transport).backward()
    assert torch.isfinite(module.adapter.weight.grad).all()
    assert module.adapter.weight.grad.abs().sum() > 0
    # The same coupling as in float32 from the same (bf16-rounded) features.
    reference = module.transfer_losses(adapted.detach().float(), la, plm.to(torch.bfloat16).float(), lt)
    assert torch.allclose(out.plan, reference.plan, atol=1e-6)


@pytest.mark.filterwarnings("ignore::espnet_gmot.ot.ConvergenceWarning")
def test_fp16_features_with_many_frames_and_tokens_give_finite_losses():
    """Issue 10 item 2: the temporal prior reaches ~n^2/2, past fp16's 65504."""
    torch.manual_seed(0)
    # a short budget: finiteness, not convergence, is the point here
    module = OTKnowledgeTransfer(DIM_A, plm_dim=DIM_T, gw_weight=0.02, temporal_weight=0.5,
                                 outer_iter=2, inner_iter=50, newton_steps=0)
    acoustic, plm, la, lt = make_float_batch(400, 300)
    adapted = module.adapt(acoustic).half().detach().requires_grad_(True)
    out = module.transfer_losses(adapted, la, plm.half(), lt)
    assert torch.isfinite(out.align) and torch.isfinite(out.transport)
    assert torch.isfinite(out.plan).all()
    (out.align + out.transport).backward()
    assert adapted.grad.dtype == torch.float16 and torch.isfinite(adapted.grad).all()
    assert adapted.grad[1, 393:].abs().sum() == 0


def test_overflowed_features_give_non_finite_losses_not_an_exception():
    """Under AMP an fp16 overflow upstream must reach the loss as inf/nan, which
    the grad scaler reads as 'skip this step and lower the scale'."""
    module = make_module(gw_weight=0.02, temporal_weight=0.5)
    acoustic, plm, la, lt = pad([make_item(20, 6, 0), make_item(8, 5, 1)])
    adapted = module.adapt(torch.nan_to_num(acoustic))
    adapted = adapted.clone()
    adapted[0, 3, 0] = float("inf")
    out = module.transfer_losses(adapted, la, plm, lt)
    assert not torch.isfinite(out.align + out.transport)


# transfer_conf's solver keys and the SinkhornSettings field each one sets
SOLVER_KEYS = {"inner_iter": "max_iter", "tol": "tol", "gradient": "gradient",
               "overrelaxation": "overrelaxation", "check_every": "check_every",
               "newton_steps": "newton_steps"}


def test_defaults_come_from_transfer_defaults_and_the_settings_object():
    """One place for each default: the constructor reads TRANSFER_DEFAULTS (what the
    recipes read), whose solver keys are TRANSFER_SOLVER_SETTINGS's fields."""
    parameters = inspect.signature(OTKnowledgeTransfer.__init__).parameters
    assert dict(TRANSFER_DEFAULTS) == {
        name: parameter.default for name, parameter in parameters.items()
        if name not in ("self", "acoustic_dim", "key_prefix")
    }
    with pytest.raises(TypeError):
        TRANSFER_DEFAULTS["epsilon"] = 0.5  # read-only
    for key, field in SOLVER_KEYS.items():
        assert TRANSFER_DEFAULTS[key] == getattr(TRANSFER_SOLVER_SETTINGS, field), key
    assert OTKnowledgeTransfer(4, plm_dim=4).settings == TRANSFER_SOLVER_SETTINGS


def test_the_module_keeps_one_frozen_settings_object():
    given = dict(inner_iter=50, tol=0.0, gradient="unrolled", overrelaxation=1.0,
                 check_every=5, newton_steps=0)
    module = OTKnowledgeTransfer(4, plm_dim=4, **given)
    assert module.settings == SinkhornSettings(
        **{SOLVER_KEYS[key]: value for key, value in given.items()}
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        module.settings.max_iter = 10


def test_solver_options_reach_the_solver_and_are_checked():
    module = make_module(gw_weight=0.0, temporal_weight=0.5, check_every=3, newton_steps=0)
    assert module.settings.check_every == 3 and module.settings.newton_steps == 0
    with pytest.raises(ValueError, match="check_every must be"):
        OTKnowledgeTransfer(4, plm_dim=4, check_every=0)
    with pytest.raises(ValueError, match="newton_steps must be"):
        OTKnowledgeTransfer(4, plm_dim=4, newton_steps=-1)


@pytest.mark.parametrize("device_type", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.filterwarnings("ignore::espnet_gmot.ot.ConvergenceWarning")
def test_fp16_autocast_with_grad_scaler_settles(device_type):
    """fp16 autocast with a GradScaler at its default scale (2^16): the first
    steps may overflow and be skipped, as in any fp16 model; the OT runs in
    float32 throughout, and the scale settles: the last steps are taken."""
    torch.manual_seed(0)
    device = torch.device(device_type)
    module = OTKnowledgeTransfer(DIM_A, plm_dim=DIM_T, gw_weight=0.02, temporal_weight=0.5,
                                 outer_iter=3, inner_iter=100).to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device_type)
    acoustic, plm, la, lt = make_float_batch(300, 260, device=device)
    skipped = []
    for _ in range(12):
        optimizer.zero_grad()
        with torch.autocast(device_type, dtype=torch.float16):
            adapted = module.adapt(acoustic)
            assert adapted.dtype == torch.float16
            out = module.transfer_losses(adapted, la, plm.half(), lt)
            loss = out.align + out.transport
        assert out.plan.dtype == torch.float32 and torch.isfinite(loss)
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        skipped.append(scaler.get_scale() < scale)
    assert not any(skipped[-3:]), skipped


# --- relaxed marginals ---------------------------------------------------------

RELAXED = [
    dict(marginals="semi_relaxed", frame_relaxation=0.0),
    dict(marginals="semi_relaxed", frame_relaxation=0.5),
    dict(marginals="unbalanced", frame_relaxation=0.5, token_relaxation=2.0),
]


@pytest.mark.parametrize("gw_weight", [0.0, 0.02])
@pytest.mark.parametrize("relaxed", RELAXED)
def test_relaxed_marginals_reach_the_solver(gw_weight, relaxed):
    module = make_module(gw_weight=gw_weight, temporal_weight=0.5, epsilon=0.1, **relaxed)
    acoustic, plm, la, lt = pad([make_item(20, 6, 0), make_item(13, 8, 1)])
    acoustic = torch.nan_to_num(acoustic)
    out = losses_for(module, acoustic, plm, la, lt)
    adapted = module.adapt(acoustic)
    cost = cosine_cost(adapted, plm, la, lt) + 0.5 / (1 - gw_weight) * temporal_cost(
        la, lt, dtype=torch.float64
    )
    rho = (relaxed["frame_relaxation"], relaxed.get("token_relaxation", float("inf")))
    settings = module.settings
    kwargs = dict(epsilon=0.1, tol=settings.tol, overrelaxation=settings.overrelaxation,
                  marginal_relaxation=rho)
    if gw_weight == 0:
        expected = sinkhorn(cost, la, lt, max_iter=settings.max_iter, **kwargs)
    else:
        expected = fused_gromov_wasserstein(
            cost, structure_cost(adapted, la), structure_cost(plm, lt), la, lt,
            gw_weight=gw_weight, outer_iter=module.outer_iter, inner_iter=settings.max_iter,
            **kwargs,
        )
    assert torch.equal(out.plan, expected.plan)
    assert torch.allclose(out.transport, expected.value.mean(), atol=1e-14)
    assert torch.allclose(out.stats["ot_mass"], expected.plan.sum((1, 2)).mean())
    assert torch.isfinite(out.align)


def test_relaxed_projection_and_alignment_loss_by_hand():
    a, z = make_item(10, 5, 3)
    lengths = torch.tensor([10]), torch.tensor([5])
    semi = make_module(temporal_weight=0.5, gw_weight=0.0, marginals="semi_relaxed",
                       frame_relaxation=0.0)
    out = losses_for(semi, a[None], z[None], *lengths)
    plan = out.plan[0]
    frame_mass = plan.sum(1)
    assert (frame_mass - 0.1).abs().max() > 1e-3  # frames are no longer uniform
    assert torch.allclose(plan.sum(0), torch.full((5,), 0.2, dtype=torch.float64), atol=1e-6)
    adapted = semi.adapt(a)
    projected = torch.diag(1 / plan.sum(0)) @ plan.T @ adapted  # eq. 20, b = received mass
    cosines = torch.nn.functional.cosine_similarity(projected, z, dim=-1)
    assert torch.allclose(out.align, (1 - cosines[1:4]).sum(), atol=1e-12)

    unbalanced = make_module(temporal_weight=0.5, gw_weight=0.0, marginals="unbalanced",
                             frame_relaxation=0.5, token_relaxation=0.05)
    out = losses_for(unbalanced, a[None], z[None], *lengths)
    plan = out.plan[0]
    received = plan.sum(0)
    assert (received - 0.2).abs().max() > 1e-3
    projected = torch.diag(1 / received) @ plan.T @ unbalanced.adapt(a)
    cosines = torch.nn.functional.cosine_similarity(projected, z, dim=-1)
    weights = (5 * received).clamp(max=1.0)  # share of its uniform mass a token received
    assert weights[1:4].min() < 1.0
    assert torch.allclose(out.align, (weights * (1 - cosines))[1:4].sum(), atol=1e-12)


def test_relaxed_gradients_reach_the_adapter_and_padding_gets_none():
    module = make_module(gw_weight=0.02, temporal_weight=0.5, marginals="semi_relaxed",
                         frame_relaxation=0.3)
    acoustic, plm, la, lt = pad([make_item(20, 6, 0), make_item(8, 5, 1)])
    acoustic = torch.nan_to_num(acoustic).requires_grad_(True)
    out = module.transfer_losses(module.adapt(acoustic), la, plm, lt)
    (out.align + out.transport).backward()
    assert module.adapter.weight.grad.abs().sum() > 0
    assert torch.isfinite(acoustic.grad).all()
    assert acoustic.grad[1, 8:].abs().sum() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(marginals="partial"), "cfg.marginals must be one of"),
        (dict(marginals="semi_relaxed"), "needs cfg.frame_relaxation"),
        (dict(marginals="unbalanced", frame_relaxation=1.0), "needs cfg.token_relaxation"),
        (dict(frame_relaxation=1.0), "cfg.frame_relaxation is not used"),
        (dict(marginals="semi_relaxed", frame_relaxation=1.0, token_relaxation=1.0),
         "cfg.token_relaxation is not used"),
        (dict(marginals="semi_relaxed", frame_relaxation=-1.0),
         "cfg.frame_relaxation must be a finite number >= 0"),
        (dict(marginals="unbalanced", frame_relaxation=1.0, token_relaxation=float("inf")),
         "cfg.token_relaxation must be a finite number >= 0"),
        (dict(gw_weight=1.0), "cfg.gw_weight must lie in"),
    ],
)
def test_bad_marginal_options_name_the_key(kwargs, message):
    """Errors name each argument with the caller's prefix (the glue's yaml section)."""
    with pytest.raises(ValueError, match=message):
        OTKnowledgeTransfer(4, plm_dim=4, key_prefix="cfg.", **kwargs)


def test_balanced_is_the_default_and_has_no_mass_stat():
    module = make_module(gw_weight=0.0, temporal_weight=0.5)
    assert module.marginals == "balanced"
    assert module.marginal_relaxation == (float("inf"), float("inf"))
    acoustic, plm, la, lt = pad([make_item(12, 4, 0)])
    assert "ot_mass" not in losses_for(module, acoustic, plm, la, lt).stats
