"""The knowledge-transfer branch: adapter, OT coupling, projection, losses, fusion.

One module covers the three methods of METHOD.md (TOT and GM-OT papers):

* OT-BERT:  ``gw_weight = 0, temporal_weight = 0`` (entropic OT, cosine cost);
* TOT-CAKT: ``gw_weight = 0, temporal_weight > 0`` (cost ``C + beta d^2``, TOT eq. 19);
* GM-OT:    ``gw_weight > 0`` (entropic fused Gromov-Wasserstein).

Training: ``H_A = FC2(H_ca)`` (TOT eq. 2), coupling ``g*`` between ``H_A`` and the
PLM states ``Z_L``, projection ``Z~_L = diag(1/b) g*^T H_A`` (eq. 20), alignment
loss (eq. 21) and the transport objective. Inference keeps only
``H_at = H_ca + s * LN(FC3(LN(H_A)))`` (eq. 22): no PLM, no OT.

``marginals`` chooses the transport: ``balanced`` (the papers': every frame
sends ``1/l_a``, every token receives ``1/l_t``), ``semi_relaxed`` (tokens hard,
frames penalised by ``frame_relaxation * KL(g 1 | 1/l_a)``, so silence and noise
frames may stay unmatched) or ``unbalanced`` (both sides KL-penalised).
"""

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Optional, Tuple

import torch
from typeguard import typechecked

from espnet_gmot.ot import (
    GRADIENT_MODES,
    SinkhornSettings,
    cosine_cost,
    length_mask,
    solve_fused_gromov_wasserstein,
    solve_sinkhorn,
    structure_cost,
    temporal_cost,
)
from espnet_gmot.ot.costs import working_dtype

MARGINAL_MODES = ("balanced", "semi_relaxed", "unbalanced")

# The module's solver settings where its arguments leave them out: a tighter
# budget than the solver functions' POT-like defaults (a coupling is solved at
# every training step) and over-relaxation, with which TOT-CAKT's stiff
# temporal prior converges within it (see the class docstring).
TRANSFER_SOLVER_SETTINGS = SinkhornSettings(max_iter=200, tol=1e-6, overrelaxation=1.7)

# The default of every configuration key of the module (an argument of
# OTKnowledgeTransfer, which takes its defaults from here), for whoever needs
# the value of a key that a configuration leaves out (the recipes' scripts). The
# solver's keys are read from TRANSFER_SOLVER_SETTINGS; inner_iter is its
# max_iter. Not here: acoustic_dim (the encoder's output size) and key_prefix
# (set by the ESPnet glue).
TRANSFER_DEFAULTS = MappingProxyType({
    "plm_dim": 768,
    "gw_weight": 0.02,
    "temporal_weight": 0.5,
    "epsilon": 0.1,
    "fusion_scale": 1.0,
    "outer_iter": 10,
    "inner_iter": TRANSFER_SOLVER_SETTINGS.max_iter,
    "tol": TRANSFER_SOLVER_SETTINGS.tol,
    "gradient": TRANSFER_SOLVER_SETTINGS.gradient,
    "overrelaxation": TRANSFER_SOLVER_SETTINGS.overrelaxation,
    "align_special_tokens": False,
    "check_every": TRANSFER_SOLVER_SETTINGS.check_every,
    "newton_steps": TRANSFER_SOLVER_SETTINGS.newton_steps,
    "marginals": "balanced",
    "frame_relaxation": None,
    "token_relaxation": None,
})


@dataclass
class TransferLosses:
    """Per-batch transfer losses (means over utterances) and diagnostics."""

    align: torch.Tensor  # L_align, TOT eq. 21
    transport: torch.Tensor  # L_fgw = E(g*), the objective without entropy
    plan: torch.Tensor  # (B, la, lt) coupling, constant unless gradient="unrolled"
    stats: Dict[str, torch.Tensor]


class OTKnowledgeTransfer(torch.nn.Module):
    """Adapter, OT-based alignment to PLM states, and fusion for CTC.

    Args:
        acoustic_dim: encoder output size ``d_a``.
        plm_dim: PLM hidden size ``d_t`` (768 for bert-base-chinese).
        gw_weight: GM-OT ``alpha``, weight of the graph-edge (Gromov-Wasserstein)
            term, in ``[0, 1)``.
        temporal_weight: GM-OT ``rho`` / TOT ``beta``, weight of the temporal
            prior ``d_ij^2``.
        epsilon: entropic regularisation (TOT ``alpha~``).
        fusion_scale: ``s >= 0`` of TOT eq. 22 (GM-OT ``ws``).
        outer_iter: mirror-descent steps of the FGW solver (GM-OT only), >= 1.
        inner_iter: maximum Sinkhorn iterations per solve, >= 1.
        tol: Sinkhorn tolerance on the marginal violation, >= 0 (0: always
            ``inner_iter`` iterations).
        gradient: ``"envelope"`` (the coupling is a constant in backward) or
            ``"unrolled"`` (differentiate through the solver iterations).
        overrelaxation: ``omega`` in ``[1, 2)`` of over-relaxed Sinkhorn (1 =
            plain). The temporal prior makes the problem stiff: with the
            default ``omega`` TOT-CAKT's coupling converges within the default
            ``inner_iter`` budget, which plain Sinkhorn does not, and GM-OT
            needs fewer iterations, for the same solution.
        align_special_tokens: include ``[CLS]``/``[SEP]`` in ``L_align``; the
            paper excludes them (eq. 21 sums ``j = 2 .. l_t - 1``). States of a
            decoder-only teacher have none (``transfer_losses``'s
            ``framed_by_special_tokens``): all of them are aligned.
        check_every: Sinkhorn iterations between the solver's host reads (its
            only synchronisations with a GPU); the result does not depend on it.
            ``None`` (the default): adaptive on the CPU, where a read costs no
            synchronisation, every 10 on a GPU.
        newton_steps: Newton steps on the semi-dual for couplings Sinkhorn
            leaves unconverged after ``inner_iter`` iterations (0: none). With
            them the papers' settings (epsilon 0.05-0.5, temporal_weight 0.5)
            converge in the default budget; a coupling that still misses its
            marginals is reported once with a ``ConvergenceWarning``.
        marginals: ``"balanced"`` (default, the papers' transport),
            ``"semi_relaxed"`` (token masses hard, frame masses KL-relaxed) or
            ``"unbalanced"`` (both KL-relaxed).
        frame_relaxation: ``rho_a >= 0``, weight of ``KL(g 1 | 1/l_a)`` on the
            frame side; 0 leaves the frames free (each token's mass goes to
            the frames that fit it best). Required by ``semi_relaxed`` and
            ``unbalanced``, refused by ``balanced``.
        token_relaxation: ``rho_t >= 0``, weight of ``KL(g^T 1 | 1/l_t)`` on
            the token side. Required by ``unbalanced`` only.
        key_prefix: prefix of the argument names in error messages, so that
            they name the setting as the caller's configuration spells it (the
            ESPnet glue passes its yaml section); empty: the bare argument names.

    The defaults are ``TRANSFER_DEFAULTS``'s. The solver's arguments
    (``inner_iter``, ``tol``, ``gradient``, ``overrelaxation``,
    ``check_every``, ``newton_steps``) are kept as one frozen
    :class:`~espnet_gmot.ot.SinkhornSettings`, ``self.settings`` (``inner_iter``
    is its ``max_iter``: the budget of every Sinkhorn solve, FGW's inner ones
    included), which the module hands to the solver.

    With relaxed marginals the projection stays the coupling-weighted mean of
    frames, ``Z~_L = diag(1 / g^T 1) g^T H_A`` (eq. 20 with ``b`` replaced by the
    tokens' received mass), so a frame with little mass contributes little to
    any token's target and a frame with none contributes nothing. With a hard
    token side every token receives ``1/l_t`` and eq. 21 is unchanged. With a
    relaxed token side token ``j``'s term of eq. 21 is weighted by
    ``min(1, l_t (g^T 1)_j)`` (a constant in the backward pass): a token the
    coupling leaves without mass has no projected target and no alignment
    loss. ``L_fgw`` stays ``E(g*)`` without the entropy and without the
    marginal penalties.

    The costs, the coupling and the losses are computed in float32 (float64 for
    float64 input) with autocast disabled, whatever the training precision: the
    temporal prior overflows fp16 and bf16 rounds it by hundreds. Non-finite
    features (an fp16 overflow upstream) give non-finite losses rather than an
    exception, so that ESPnet's AMP grad scaler skips that step as it should.
    """

    @typechecked
    def __init__(
        self,
        acoustic_dim: int,
        plm_dim: int = TRANSFER_DEFAULTS["plm_dim"],
        gw_weight: float = TRANSFER_DEFAULTS["gw_weight"],
        temporal_weight: float = TRANSFER_DEFAULTS["temporal_weight"],
        epsilon: float = TRANSFER_DEFAULTS["epsilon"],
        fusion_scale: float = TRANSFER_DEFAULTS["fusion_scale"],
        outer_iter: int = TRANSFER_DEFAULTS["outer_iter"],
        inner_iter: int = TRANSFER_DEFAULTS["inner_iter"],
        tol: float = TRANSFER_DEFAULTS["tol"],
        gradient: str = TRANSFER_DEFAULTS["gradient"],
        overrelaxation: float = TRANSFER_DEFAULTS["overrelaxation"],
        align_special_tokens: bool = TRANSFER_DEFAULTS["align_special_tokens"],
        check_every: Optional[int] = TRANSFER_DEFAULTS["check_every"],
        newton_steps: int = TRANSFER_DEFAULTS["newton_steps"],
        marginals: str = TRANSFER_DEFAULTS["marginals"],
        frame_relaxation: Optional[float] = TRANSFER_DEFAULTS["frame_relaxation"],
        token_relaxation: Optional[float] = TRANSFER_DEFAULTS["token_relaxation"],
        key_prefix: str = "",
    ):
        super().__init__()
        self.key_prefix = key = key_prefix
        self.marginal_relaxation = self._marginal_relaxation(
            marginals, frame_relaxation, token_relaxation
        )
        self.marginals = marginals
        # Each setting against the range its docstring gives, when the model is
        # built: outside it the solver would do nothing or give NaN losses later.
        finite = math.isfinite
        for name, value, valid, allowed in (
            ("acoustic_dim", acoustic_dim, acoustic_dim >= 1, "be >= 1"),
            ("plm_dim", plm_dim, plm_dim >= 1, "be >= 1"),
            ("gw_weight", gw_weight, 0.0 <= gw_weight < 1.0, "lie in [0, 1)"),
            ("temporal_weight", temporal_weight, finite(temporal_weight) and temporal_weight >= 0,
             "be >= 0 and finite"),
            ("epsilon", epsilon, finite(epsilon) and epsilon > 0, "be > 0 and finite"),
            ("fusion_scale", fusion_scale, finite(fusion_scale) and fusion_scale >= 0,
             "be >= 0 and finite"),
            ("outer_iter", outer_iter, outer_iter >= 1, "be >= 1"),
            ("inner_iter", inner_iter, inner_iter >= 1, "be >= 1"),
            ("tol", tol, finite(tol) and tol >= 0, "be >= 0 and finite (0: run inner_iter)"),
            ("overrelaxation", overrelaxation, 1.0 <= overrelaxation < 2.0,
             "lie in [1, 2) (1: plain Sinkhorn)"),
            ("check_every", check_every, check_every is None or check_every >= 1,
             "be >= 1 (or null: by device)"),
            ("newton_steps", newton_steps, newton_steps >= 0, "be >= 0"),
        ):
            if not valid:
                raise ValueError(f"{key}{name} must {allowed}, got {value}")
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"{key}gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
        # The Sinkhorn settings of every solve (FGW's inner ones included).
        self.settings = dataclasses.replace(
            TRANSFER_SOLVER_SETTINGS,
            max_iter=inner_iter,
            tol=tol,
            gradient=gradient,
            overrelaxation=overrelaxation,
            check_every=check_every,
            newton_steps=newton_steps,
        )
        self.plm_dim = plm_dim
        self.gw_weight = gw_weight
        self.temporal_weight = temporal_weight
        self.epsilon = epsilon
        self.fusion_scale = fusion_scale
        self.outer_iter = outer_iter
        self.align_special_tokens = align_special_tokens

        self.adapter = torch.nn.Linear(acoustic_dim, plm_dim)  # FC2, TOT eq. 2
        self.fusion_input_norm = torch.nn.LayerNorm(plm_dim)
        self.fusion_proj = torch.nn.Linear(plm_dim, acoustic_dim)  # FC3, TOT eq. 22
        self.fusion_output_norm = torch.nn.LayerNorm(acoustic_dim)

    def _marginal_relaxation(
        self, marginals: str, frame_relaxation: Optional[float], token_relaxation: Optional[float]
    ) -> Tuple[float, float]:
        """``(rho_a, rho_t)`` for the solvers (``inf``: hard), checked."""
        prefix = self.key_prefix
        if marginals not in MARGINAL_MODES:
            raise ValueError(
                f"{prefix}marginals must be one of {MARGINAL_MODES}, got {marginals!r}"
            )
        needed = {
            "balanced": (),
            "semi_relaxed": ("frame_relaxation",),
            "unbalanced": ("frame_relaxation", "token_relaxation"),
        }[marginals]
        given = dict(frame_relaxation=frame_relaxation, token_relaxation=token_relaxation)
        for key, value in given.items():
            if key in needed and value is None:
                raise ValueError(
                    f"{prefix}marginals: {marginals} needs {prefix}{key} "
                    f"(a KL weight >= 0; 0 leaves that side free, larger values "
                    f"approach the balanced coupling)"
                )
            if key not in needed and value is not None:
                raise ValueError(
                    f"{prefix}{key} is not used with {prefix}marginals: "
                    f"{marginals}; remove it, or choose "
                    f"{'unbalanced' if key == 'token_relaxation' else 'semi_relaxed or unbalanced'}"
                )
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ValueError(
                    f"{prefix}{key} must be a finite number >= 0 (use "
                    f"marginals: balanced for a hard constraint), got {value}"
                )
        rho_frames = math.inf if frame_relaxation is None else float(frame_relaxation)
        rho_tokens = math.inf if token_relaxation is None else float(token_relaxation)
        return rho_frames, rho_tokens

    def adapt(self, acoustic: torch.Tensor) -> torch.Tensor:
        """``H_A = FC2(H_ca)``: acoustic features in the PLM space."""
        return self.adapter(acoustic)

    def fuse(self, acoustic: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
        """``H_at = H_ca + s * LN(FC3(LN(H_A)))`` (TOT eq. 22), what CTC reads."""
        linguistic = self.fusion_proj(self.fusion_input_norm(adapted))
        return acoustic + self.fusion_scale * self.fusion_output_norm(linguistic)

    def forward(self, acoustic: torch.Tensor) -> torch.Tensor:
        """Inference path: fused features from encoder output alone."""
        return self.fuse(acoustic, self.adapt(acoustic))

    def transfer_losses(
        self,
        adapted: torch.Tensor,
        acoustic_lengths: torch.Tensor,
        plm_states: torch.Tensor,
        plm_lengths: torch.Tensor,
        framed_by_special_tokens: bool = True,
    ) -> TransferLosses:
        """Coupling, projection and losses for one batch.

        Args:
            adapted: ``(B, la, dt)`` adapter output ``H_A``.
            acoustic_lengths: ``(B,)`` valid frames.
            plm_states: ``(B, lt, dt)`` PLM states of ``[CLS] y [SEP]`` (an
                encoder teacher), or of ``y``'s tokens only (a decoder-only one).
            plm_lengths: ``(B,)`` valid tokens, special tokens included.
            framed_by_special_tokens: whether the first and last state are
                ``[CLS]`` and ``[SEP]``, which ``L_align`` skips unless
                ``align_special_tokens``; False: every state is a content token.
        """
        if plm_states.size(-1) != self.plm_dim:
            raise ValueError(
                f"PLM states have hidden size {plm_states.size(-1)} but the adapter "
                f"projects to plm_dim={self.plm_dim}: set {self.key_prefix}plm_dim to "
                f"{plm_states.size(-1)} (the PLM's hidden_size)"
            )
        with torch.autocast(device_type=adapted.device.type, enabled=False):
            return self._transfer_losses(
                adapted, acoustic_lengths, plm_states, plm_lengths, framed_by_special_tokens
            )

    def _transfer_losses(
        self, adapted, acoustic_lengths, plm_states, plm_lengths, framed_by_special_tokens
    ):
        n_max, m_max = adapted.size(1), plm_states.size(1)
        # Everything below in the working precision (see the class docstring);
        # gradients reach a low-precision adapter output through this cast.
        dtype = working_dtype(adapted.dtype)
        # Padding must not reach any value or gradient, whatever it holds.
        frame_mask = length_mask(acoustic_lengths, n_max)[..., None]
        token_mask = length_mask(plm_lengths, m_max)[..., None]
        zero = torch.zeros((), dtype=dtype, device=adapted.device)
        adapted = torch.where(frame_mask, adapted.to(dtype), zero)
        plm_states = torch.where(token_mask, plm_states.to(dtype), zero)
        node_cost = cosine_cost(adapted, plm_states, acoustic_lengths, plm_lengths)
        cost = node_cost
        if self.temporal_weight > 0:
            # Folded into the node cost: (1 - alpha) M = (1 - alpha) D_AL + rho T.
            prior = temporal_cost(
                acoustic_lengths, plm_lengths, n_max, m_max, dtype=node_cost.dtype
            )
            cost = node_cost + self.temporal_weight / (1.0 - self.gw_weight) * prior
        setting = dict(temporal_weight=self.temporal_weight)
        if self.gw_weight > 0:
            result = solve_fused_gromov_wasserstein(
                cost,
                structure_cost(adapted, acoustic_lengths),
                structure_cost(plm_states, plm_lengths),
                acoustic_lengths,
                plm_lengths,
                epsilon=self.epsilon,
                gw_weight=self.gw_weight,
                outer_iter=self.outer_iter,
                settings=self.settings,
                marginal_relaxation=self.marginal_relaxation,
                check_finite=False,
                setting=setting,
            )
        else:
            result = solve_sinkhorn(
                cost,
                acoustic_lengths,
                plm_lengths,
                epsilon=self.epsilon,
                settings=self.settings,
                marginal_relaxation=self.marginal_relaxation,
                check_finite=False,
                setting=setting,
            )
        plan = result.plan.to(dtype)

        # Z~_L = diag(1/b) g*^T H_A: each token is the coupling-weighted mean of
        # frames. b is taken from the plan itself, which equals the uniform mass at
        # convergence and keeps the mean exact when the solver stopped early (and
        # is the received mass when the token side is relaxed).
        token_mass = plan.sum(1, keepdim=True).transpose(1, 2)  # (B, lt, 1) = b
        projected = torch.bmm(plan.transpose(1, 2), adapted) / token_mass.clamp_min(
            torch.finfo(plan.dtype).tiny
        )
        similarity = torch.nn.functional.cosine_similarity(
            projected, plm_states, dim=-1, eps=1e-8
        )
        content = self._content_token_mask(plm_lengths, m_max, framed_by_special_tokens)
        misfit = 1.0 - similarity
        if self.marginal_relaxation[1] != math.inf:
            # a token weighs by the share of its uniform mass it received
            received = token_mass.squeeze(2).detach() * plm_lengths[:, None].to(dtype)
            misfit = misfit * received.clamp(max=1.0)
        align = torch.where(content, misfit, torch.zeros_like(similarity)).sum(1)

        stats = self._plan_stats(result.plan.detach(), acoustic_lengths, plm_lengths)
        stats["ot_marginal_error"] = result.marginal_error.detach().mean()
        stats["ot_iterations"] = torch.tensor(float(result.n_iter))
        if self.marginals != "balanced":
            # total transported mass (1 for a balanced coupling)
            stats["ot_mass"] = result.plan.detach().sum((1, 2)).mean()
        return TransferLosses(
            align=align.mean(), transport=result.value.mean(), plan=plan, stats=stats
        )

    def _content_token_mask(
        self, plm_lengths: torch.Tensor, max_len: int, framed_by_special_tokens: bool
    ) -> torch.Tensor:
        mask = length_mask(plm_lengths, max_len)
        if framed_by_special_tokens and not self.align_special_tokens:
            positions = torch.arange(max_len, device=plm_lengths.device)[None, :]
            mask = mask & (positions > 0) & (positions < plm_lengths[:, None] - 1)
        return mask

    @staticmethod
    def _plan_stats(
        plan: torch.Tensor, source_lengths: torch.Tensor, target_lengths: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """Normalised coupling entropy and monotonicity, averaged over the batch.

        ``ot_entropy`` is ``H(g) / log(la * lt)``: 1 for the uniform coupling, near
        0 for a hard alignment. ``ot_monotonicity`` is the share of consecutive
        frame pairs whose expected token position does not go backwards.
        """
        plan = plan.float()
        entropy = -(plan * torch.log(plan.clamp_min(1e-30))).sum((1, 2))
        n = source_lengths.float()
        m = target_lengths.float()
        max_entropy = torch.log(n * m).clamp_min(1e-6)
        positions = torch.arange(plan.size(2), device=plan.device, dtype=plan.dtype)
        row_mass = plan.sum(2).clamp_min(1e-30)
        expected = (plan * positions).sum(2) / row_mass  # (B, la)
        steps = expected[:, 1:] - expected[:, :-1]
        pair_valid = length_mask(source_lengths - 1, steps.size(1)).float()
        forward = ((steps >= -1e-6).float() * pair_valid).sum(1)
        monotonicity = forward / pair_valid.sum(1).clamp_min(1.0)
        return {
            "ot_entropy": (entropy / max_entropy).mean(),
            "ot_monotonicity": monotonicity.mean(),
        }
