"""model: gmot under mixed precision: bf16 and fp16 autocast, ESPnet's grad scaler.

ESPnet's ``--use_amp true`` wraps the forward pass in ``torch.cuda.amp.autocast``
(bf16 where the GPU supports it, else fp16) and scales the loss with a
``GradScaler``. The CPU tests run the same model under CPU autocast; the CUDA
test runs ESPnet's own combination where a GPU is present.
"""

import pytest
import torch

from tests.helpers.tiny_asr import build_tiny_gmot, make_tiny_bert, make_tiny_corpus

METHODS = {
    "otbert": dict(gw_weight=0.0, temporal_weight=0.0),
    "totcakt": dict(gw_weight=0.0, temporal_weight=0.5),
    "gmot": dict(gw_weight=0.02, temporal_weight=0.5),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("amp")
    return root, make_tiny_corpus(root), make_tiny_bert(root / "bert")


def build(workspace, method, **model_conf):
    root, corpus, bert = workspace
    return build_tiny_gmot(root, corpus["token_list"], bert, transfer_conf=METHODS[method],
                           **model_conf)


def make_batch(workspace, seconds=(6.0, 5.0, 3.5), chars=(60, 48, 30)):
    """Long utterances (up to ~150 encoder frames) and transcripts of up to 60
    characters, with cached PLM states on the ``plm_states`` key."""
    _, corpus, _ = workspace
    tokens = corpus["token_list"].read_text(encoding="utf-8").split()
    gen = torch.Generator().manual_seed(0)
    text = torch.full((len(chars), max(chars)), -1, dtype=torch.long)
    for b, count in enumerate(chars):
        text[b, :count] = torch.randint(2, len(tokens) - 1, (count,), generator=gen)
    samples = [int(s * 16000) for s in seconds]
    speech = torch.zeros(len(samples), max(samples))
    for b, n in enumerate(samples):
        speech[b, :n] = 0.1 * torch.randn(n, generator=gen)
    plm_lengths = torch.tensor(chars) + 2
    plm_states = torch.randn(len(chars), int(plm_lengths.max()), 32, generator=gen)
    return dict(
        speech=speech, speech_lengths=torch.tensor(samples),
        text=text, text_lengths=torch.tensor(chars),
        plm_states=plm_states, plm_states_lengths=plm_lengths,
        utt_id=[f"utt{b}" for b in range(len(chars))],
    )


def to(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def run_step(model, batch, device_type, dtype):
    model.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        loss, stats, _ = model(**batch)
    loss.backward()
    return loss, stats


def assert_finite_step(model, loss, stats):
    assert torch.isfinite(loss), loss
    for key, value in stats.items():
        assert value is None or torch.isfinite(value).all(), (key, value)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
    assert model.transfer.adapter.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cpu_autocast_step_is_finite_and_close_to_fp32(workspace, method, dtype):
    model = build(workspace, method)
    model.train()
    batch = make_batch(workspace)
    reference_loss, reference = run_step(model, batch, "cpu", None)
    loss, stats = run_step(model, batch, "cpu", dtype)
    assert_finite_step(model, loss, stats)
    # The coupling is solved in float32 whatever autocast does: its column
    # marginals are as tight as in the fp32 run, far below a half-precision
    # rounding step (about 4e-3 for bf16, 5e-4 for fp16).
    assert stats["ot_marginal_error"] < 1e-4
    assert abs(stats["ot_marginal_error"] - reference["ot_marginal_error"]) < 1e-5
    # The transfer losses follow the fp32 ones up to the encoder's rounding.
    for key in ("loss_align", "loss_fgw", "loss_ctc"):
        assert torch.allclose(stats[key].float(), reference[key].float(), rtol=0.05, atol=0.02), (
            key, stats[key], reference[key])
    assert torch.allclose(loss.float(), reference_loss.float(), rtol=0.05)


def skipped_steps(model, batch, device_type, dtype, steps):
    """ESPnet's --use_amp step (autocast, GradScaler at its default scale of
    2^16, Adam) ``steps`` times. Returns which steps the scaler skipped for
    inf/nan gradients and the last step's stats."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device_type)
    skipped = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=dtype):
            loss, stats, _ = model(**batch)
        assert torch.isfinite(loss), (loss, stats)
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        skipped.append(scaler.get_scale() < scale)
    return skipped, stats


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device_type", DEVICES)
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_grad_scaler_settles_as_without_the_transfer_loss(workspace, device_type, method, dtype):
    """At the scaler's first scales (2^16 down) fp16 gradients overflow in
    ESPnet's encoder front-end (``encoder.embed``) with or without the transfer
    loss, and the scaler skips those steps; the transfer loss adds its gradient
    to the encoder's, which may cost one more halving, no more. Unscaled, every
    gradient is finite (test_cpu_autocast_step_is_finite_and_close_to_fp32)."""
    device = torch.device(device_type)
    batch = to(make_batch(workspace), device)
    runs = {}
    for weight in (0.0, 1.0):
        model = build(workspace, method, transfer_weight=weight).to(device)
        runs[weight] = skipped_steps(model, batch, device_type, dtype, steps=10)
    (without, _), (with_transfer, stats) = runs[0.0], runs[1.0]
    assert sum(with_transfer) <= sum(without) + 1, (with_transfer, without)
    assert not any(with_transfer[-3:]), with_transfer  # the scale has settled
    if dtype == torch.bfloat16:
        assert not any(with_transfer)  # bf16 has float32's range: nothing overflows
    assert stats["ot_marginal_error"] < 1e-4
