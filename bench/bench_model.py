#!/usr/bin/env python3
"""GM-OT against the stock Conformer-CTC: training-step and decoding time.

Both models have the papers' encoder (conv2d x4, 16 Conformer blocks, d 256,
4 heads, FFN 2048, kernel 15) on 80-dim features; GM-OT adds the adapter,
fusion and the FGW transfer branch (METHOD.md defaults, bert-base-chinese size
768) with PLM states cached (read from the batch, as with the plm_states key).
Prints the median time of one training step (forward + backward) and of
decoding (encoder + CTC greedy argmax) for each, and the ratios. Targets:
training <= 1.10, decoding <= 1.05. Usage::

    python bench/bench_model.py [--batch 8] [--repeats 5] [--threads 2] [--blocks 16]
"""

import argparse
import statistics
import time

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.espnet_model import ESPnetASRModel

from espnet_gmot.espnet.model import ESPnetGMOTModel

VOCAB = 4233  # AISHELL-1 char token list size
FEATS = 80


def build(kind, blocks):
    torch.manual_seed(0)
    encoder = ConformerEncoder(
        FEATS, output_size=256, attention_heads=4, linear_units=2048, num_blocks=blocks,
        input_layer="conv2d", macaron_style=True, rel_pos_type="latest",
        pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
        activation_type="swish", use_cnn_module=True, cnn_module_kernel=15,
    )
    ctc = CTC(VOCAB, 256)
    tokens = ["<blank>", "<unk>", *[chr(0x4E00 + k) for k in range(VOCAB - 3)], "<sos/eos>"]
    common = dict(vocab_size=VOCAB, token_list=tokens, frontend=None, specaug=None,
                  normalize=None, preencoder=None, encoder=encoder, postencoder=None,
                  decoder=None, ctc=ctc, joint_network=None)
    if kind == "baseline":
        return ESPnetASRModel(**common, ctc_weight=1.0)
    return ESPnetGMOTModel(**common, ctc_weight=0.3, transfer_conf=dict(
        plm_dim=768, gw_weight=0.02, temporal_weight=0.5, epsilon=0.1))


def make_batch(batch, seed=0):
    """AISHELL-like: 3-6 s utterances, ~3.5 chars per second, cached PLM states."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(300, 601, (batch,), generator=gen)
    chars = (frames.float() / 100 * 3.5).long().clamp(min=2)
    speech = torch.randn(batch, int(frames.max()), FEATS, generator=gen)
    text = torch.full((batch, int(chars.max())), -1, dtype=torch.long)
    for b in range(batch):
        text[b, : chars[b]] = torch.randint(3, VOCAB - 1, (int(chars[b]),), generator=gen)
    plm_lengths = chars + 2  # [CLS] ... [SEP]
    plm_states = torch.randn(batch, int(plm_lengths.max()), 768, generator=gen)
    return dict(speech=speech, speech_lengths=frames, text=text, text_lengths=chars,
                plm_states=plm_states, plm_states_lengths=plm_lengths)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_step(model, inputs):
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _, _ = model(**inputs)
    loss.backward()


@torch.no_grad()
def decoding(model, data):
    model.eval()
    encoded, _ = model.encode(data["speech"], data["speech_lengths"])
    return model.ctc.argmax(encoded)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_batch(args.batch)
    models = {kind: build(kind, args.blocks) for kind in ("baseline", "gmot")}
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{args.blocks} Conformer blocks, frames {data['speech_lengths'].tolist()}")
    # Interleave the two models so that load from elsewhere hits both alike.
    steps, decodes = {}, {}
    for kind, model in models.items():
        inputs = dict(data) if kind == "gmot" else {
            k: v for k, v in data.items() if not k.startswith("plm_")}
        steps[kind] = lambda model=model, inputs=inputs: training_step(model, inputs)
        decodes[kind] = lambda model=model: decoding(model, data)
    train_times = {kind: [] for kind in models}
    decode_times = {kind: [] for kind in models}
    for kind in models:  # warm-up
        steps[kind]()
        decodes[kind]()
    for _ in range(args.repeats):
        for kind in models:
            train_times[kind].append(timed(steps[kind]))
            decode_times[kind].append(timed(decodes[kind]))
    times = {}
    for kind in models:
        times[kind] = (statistics.median(train_times[kind]), statistics.median(decode_times[kind]))
        print(f"{kind:9s} training step {times[kind][0] * 1e3:8.1f} ms   "
              f"decoding {times[kind][1] * 1e3:8.1f} ms")
    (bt, bd), (gt, gd) = times["baseline"], times["gmot"]
    print(f"ratio GM-OT / baseline: training step {gt / bt:.3f} (target <= 1.10), "
          f"decoding {gd / bd:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
