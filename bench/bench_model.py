#!/usr/bin/env python3
"""What the transfer branch costs at the papers' scale: step time, memory, solver share.

Every system has the papers' encoder (conv2d x4 subsampling, 16 Conformer blocks,
d 256, 4 heads, FFN 2048, kernel 15) on 80-dim features and CTC over AISHELL-1's
4,233 characters. The baseline is ESPnet's stock ``ESPnetASRModel``; OT-BERT,
TOT-CAKT and GM-OT are ``model: gmot`` with the project's AISHELL configs'
transfer settings and a teacher of bert-base-chinese's architecture (12 layers,
hidden 768, vocabulary 21,128), built from its config with random weights
(no hub here; the cost does not depend on the weights) and loaded through the
same ``from_pretrained`` path as the real one.

Batches are shaped like ESPnet's AISHELL-1 config (``batch_type: numel``,
``batch_bins: 4000000``): utterances of similar length (ESPnet sorts by length),
as many as fit the bins at 80 features per frame, about 100 of 3-10 s with
3.2 characters per second. ``--batch`` caps the size (the CPU default: 8).

For each system, in fp32 and with AMP (CUDA: fp16 autocast plus ESPnet's
``GradScaler``, as ``--use_amp true``; CPU: bf16 autocast), with PLM states
cached (read from the batch, as with the ``plm_states`` data key) and with the
teacher run on the fly, it prints the median time of one training step
(forward, backward, Adam step), the peak memory of the step, the solver's share
of the step and the ratios to the baseline. Targets (issue 15): GPU <= 1.05x
(cached) and <= 1.15x (on the fly) step time, <= 1.10x peak memory; CPU <= 1.10x.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during a step; on CPU
the peak resident set during a step in a fresh process (``--memory-probe``),
less the process's size before the model was built, with glibc told to map
every block of 64 KiB or more by itself (``MALLOC_MMAP_THRESHOLD_``): freed
tensors then leave the resident set at once, so it follows the live tensors
as ``max_memory_allocated`` does, not what the allocator kept for reuse
(without it, the same probe read 1.80-2.11 GiB for the baseline on one commit).
Both include weights, gradients, optimiser state and the teacher where it runs.

Usage::

    python bench/bench_model.py                     # CUDA if present, else CPU
    python bench/bench_model.py --device cpu --batch 8 --repeats 3
    python bench/bench_model.py --systems baseline,gmot --precisions fp32
    python bench/bench_model.py --device cpu --teachers on_the_fly --teacher-dtype bfloat16
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.espnet_model import ESPnetASRModel

import espnet_gmot.transfer.module as transfer_module
from espnet_gmot.espnet.model import ESPnetGMOTModel
from espnet_gmot.transfer.plm import WEIGHT_DTYPES

VOCAB = 4233  # AISHELL-1 character token list, <blank> <unk> ... <sos/eos>
FEATS = 80
FRAMES_PER_SECOND = 100
CHARS_PER_SECOND = 3.2  # AISHELL-1: 14.4 characters in 4.5 s on average
BATCH_BINS = 4_000_000
# glibc serves blocks of this size or more with their own mmap (see the module docstring)
CPU_PROBE_MMAP_THRESHOLD = 64 * 1024

# bert-base-chinese's config.json (architecture only).
BERT_BASE_CHINESE = dict(
    vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
    hidden_act="gelu", pooler_fc_size=768,
)

# The AISHELL recipe's transfer settings (egs2/aishell/asr_gmot/conf).
SYSTEMS = {
    "baseline": None,
    "otbert": dict(gw_weight=0.0, temporal_weight=0.0),
    "totcakt": dict(gw_weight=0.0, temporal_weight=0.5),
    "gmot": dict(gw_weight=0.02, temporal_weight=0.5),
}


def token_list():
    return ["<blank>", "<unk>", *[chr(0x4E00 + k) for k in range(VOCAB - 3)], "<sos/eos>"]


def build_teacher(directory: Path) -> Path:
    """A random-weight PLM of bert-base-chinese's architecture, saved for from_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizer

    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(0x4E00 + k) for k in range(BERT_BASE_CHINESE["vocab_size"] - len(specials))]
    (directory / "vocab.txt").write_text("\n".join(specials + chars) + "\n", encoding="utf-8")
    BertTokenizer(str(directory / "vocab.txt"), do_lower_case=False).save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(BertConfig(**BERT_BASE_CHINESE)).save_pretrained(directory)
    return directory


def build(system: str, blocks: int, teacher_dir: Path, teacher_dtype: str = "float32"):
    torch.manual_seed(0)
    encoder = ConformerEncoder(
        FEATS, output_size=256, attention_heads=4, linear_units=2048, num_blocks=blocks,
        input_layer="conv2d", macaron_style=True, rel_pos_type="latest",
        pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
        activation_type="swish", use_cnn_module=True, cnn_module_kernel=15,
    )
    common = dict(
        vocab_size=VOCAB, token_list=token_list(), frontend=None, specaug=None,
        normalize=None, preencoder=None, encoder=encoder, postencoder=None,
        decoder=None, ctc=CTC(VOCAB, 256), joint_network=None,
    )
    if SYSTEMS[system] is None:
        return ESPnetASRModel(**common, ctc_weight=1.0)
    return ESPnetGMOTModel(
        **common, asr_weight=0.3, transfer_weight=1.0,
        transfer_conf=dict(plm_dim=768, epsilon=0.1, **SYSTEMS[system]),
        plm_conf=dict(name_or_path=str(teacher_dir), local_files_only=True, dtype=teacher_dtype),
    )


def make_batch(max_batch: int, seconds: float, seed: int = 0):
    """A length-sorted numel batch: utterances of ``seconds`` to 1.1 x ``seconds``."""
    gen = torch.Generator().manual_seed(seed)
    longest = int(seconds * 1.1 * FRAMES_PER_SECOND)
    size = max(1, min(max_batch, BATCH_BINS // (longest * FEATS)))
    frames = torch.randint(int(seconds * FRAMES_PER_SECOND), longest + 1, (size,), generator=gen)
    frames[0] = longest
    chars = (frames.float() / FRAMES_PER_SECOND * CHARS_PER_SECOND).round().long().clamp(min=2)
    # Speech-like features: a smooth random walk, so neighbouring frames are similar.
    steps = torch.randn(size, longest, FEATS, generator=gen) * 0.3
    speech = torch.cumsum(steps, dim=1) / torch.arange(1, longest + 1).sqrt()[None, :, None]
    text = torch.full((size, int(chars.max())), -1, dtype=torch.long)
    for b in range(size):
        text[b, : chars[b]] = torch.randint(2, VOCAB - 1, (int(chars[b]),), generator=gen)
    plm_lengths = chars + 2  # [CLS] ... [SEP]
    plm_states = torch.randn(size, int(plm_lengths.max()), 768, generator=gen)
    return dict(speech=speech, speech_lengths=frames, text=text, text_lengths=chars,
                plm_states=plm_states, plm_states_lengths=plm_lengths)


def inputs_for(system: str, teacher: str, batch, device):
    drop_plm = SYSTEMS[system] is None or teacher == "on_the_fly"
    return {k: v.to(device) for k, v in batch.items() if not (drop_plm and k.startswith("plm_"))}


class Step:
    """One training step as ESPnet's trainer takes it (``--use_amp`` as ``amp``)."""

    def __init__(self, model, inputs, device, amp: bool):
        self.model, self.inputs, self.device, self.amp = model, inputs, device, amp
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        cuda = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if amp and cuda else None
        self.autocast_dtype = torch.float16 if cuda else torch.bfloat16
        self.skipped = 0

    def __call__(self):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.amp):
            loss, stats, _ = self.model(**self.inputs)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}: {stats}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.skipped += int(self.scaler.get_scale() < scale)  # inf/nan grads: step skipped
        else:
            loss.backward()
            self.optimizer.step()
        return stats


@torch.no_grad()
def decoding(model, batch, device):
    """Inference: ``encode`` (with the fusion for ``model: gmot``) and CTC argmax."""
    model.eval()
    encoded, _ = model.encode(batch["speech"].to(device), batch["speech_lengths"].to(device))
    return model.ctc.argmax(encoded)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def solver_timer(device, totals):
    """Time every OT solve of the transfer module (a separate, instrumented pass)."""
    patched = {}
    for name in ("solve_sinkhorn", "solve_fused_gromov_wasserstein"):
        original = getattr(transfer_module, name)

        def wrapper(*args, _original=original, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            result = _original(*args, **kwargs)
            synchronize(device)
            totals.append(time.perf_counter() - start)
            return result

        patched[name] = original
        setattr(transfer_module, name, wrapper)
    try:
        yield
    finally:
        for name, original in patched.items():
            setattr(transfer_module, name, original)


def configurations(args):
    for precision in args.precisions:
        for system in args.systems:
            teachers = ["cached"] if SYSTEMS[system] is None else args.teachers
            for teacher in teachers:
                yield system, precision, teacher


def memory_probe(args, device, teacher_dir, system, precision, teacher):
    """Peak memory of a step, in MiB (see the module docstring)."""
    if device.type == "cuda":
        model = build(system, args.blocks, teacher_dir, args.teacher_dtype).to(device)
        step = Step(model, inputs_for(system, teacher, make_batch(args.batch, args.seconds), device),
                    device, precision == "amp")
        step()  # optimiser state and the lazy teacher exist from here on, as in training
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        del step, model
        torch.cuda.empty_cache()
        return peak
    command = [sys.executable, __file__, "--memory-probe", f"{system},{precision},{teacher}",
               "--device", "cpu", "--batch", str(args.batch), "--seconds", str(args.seconds),
               "--blocks", str(args.blocks), "--threads", str(args.threads),
               "--teacher-dir", str(teacher_dir), "--teacher-dtype", args.teacher_dtype]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(CPU_PROBE_MMAP_THRESHOLD))
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_mib"]


def cpu_has_bfloat16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 or newer); without
    them CPU autocast emulates bf16 in scalar code."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return False


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_memory_probe(args, teacher_dir):
    """Child process: the peak resident set during a warmed-up step, over the
    process's size before the model was built (imports excluded)."""
    system, precision, teacher = args.memory_probe.split(",")
    device = torch.device("cpu")
    before_model = _proc_status_kib("VmRSS")
    model = build(system, args.blocks, teacher_dir, args.teacher_dtype)
    step = Step(model, inputs_for(system, teacher, make_batch(args.batch, args.seconds), device),
                device, precision == "amp")
    step()
    # Linux resets the high-water mark VmHWM when 5 is written to clear_refs.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step()
    peak = _proc_status_kib("VmHWM") - before_model
    print(json.dumps({"peak_mib": peak / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None,
                        help="cap on utterances per batch (default: CUDA 128, i.e. the "
                             "numel bins decide; CPU 8)")
    parser.add_argument("--seconds", type=float, default=4.5,
                        help="shortest utterance of the batch; the longest is 1.1x")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--precisions", default="fp32,amp")
    parser.add_argument("--teachers", default="cached,on_the_fly")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--teacher-dtype", default="float32", choices=WEIGHT_DTYPES,
                        help="plm_conf.dtype: the precision of the teacher run on the fly")
    parser.add_argument("--teacher-dir", type=Path, default=None,
                        help="where the random bert-base-chinese-shaped teacher is kept")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.batch is None:
        args.batch = 128 if device.type == "cuda" else 8
    args.systems = args.systems.split(",")
    args.precisions = args.precisions.split(",")
    args.teachers = args.teachers.split(",")
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or "baseline" not in args.systems:
        parser.error(f"--systems: choose among {list(SYSTEMS)}, baseline included")
    torch.set_num_threads(args.threads)
    teacher_dir = args.teacher_dir or Path(tempfile.gettempdir()) / "espnet_gmot_bert_base_chinese_random"
    build_teacher(teacher_dir)
    if args.memory_probe:
        cpu_memory_probe(args, teacher_dir)
        return

    if device.type == "cpu" and "amp" in args.precisions and not cpu_has_bfloat16():
        print(f"warning: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bfloat16 "
              "instructions: CPU autocast emulates bf16, so each AMP step of the papers' model "
              "takes minutes (--batch 8, --systems baseline,gmot, --repeats 2: unfinished after "
              "30 min on 2 AVX2 cores); --precisions fp32 measures the float32 rows alone",
              file=sys.stderr)

    batch = make_batch(args.batch, args.seconds)
    lengths = batch["speech_lengths"]
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f", {args.threads} threads")
          + f", {args.blocks} Conformer blocks, teacher weights in {args.teacher_dtype}")
    print(f"batch: {lengths.numel()} utterances of {lengths.min().item() / 100:.2f}-"
          f"{lengths.max().item() / 100:.2f} s, {batch['text_lengths'].min().item()}-"
          f"{batch['text_lengths'].max().item()} characters "
          f"({lengths.max().item() * FEATS * lengths.numel():,} of {BATCH_BINS:,} numel bins)")

    configs = list(configurations(args))
    models = {s: build(s, args.blocks, teacher_dir, args.teacher_dtype).to(device) for s in args.systems}
    steps = {
        (s, p, t): Step(models[s], inputs_for(s, t, batch, device), device, p == "amp")
        for s, p, t in configs
    }
    for step in steps.values():  # warm-up: allocator, lazy teacher, optimiser state
        step()
    times = {key: [] for key in steps}
    for _ in range(args.repeats):  # interleaved, so that outside load hits all alike
        for key, step in steps.items():
            times[key].append(timed(step, device))
    solver_share = {}
    for key, step in steps.items():
        if SYSTEMS[key[0]] is None:
            continue
        totals = []
        with solver_timer(device, totals):
            step_time = timed(step, device)
        solver_share[key] = sum(totals) / step_time
    decode_times = {s: [] for s in models}
    for _ in range(args.repeats):
        for system, model in models.items():
            decode_times[system].append(timed(lambda: decoding(model, batch, device), device))
    decode = {s: statistics.median(t) for s, t in decode_times.items()}
    skipped = {key: step.skipped for key, step in steps.items() if step.skipped}
    memory = {}
    if not args.no_memory:
        del steps, models
        for key in configs:
            memory[key] = memory_probe(args, device, teacher_dir, *key)

    print()
    print(f"{'system':9s} {'precision':9s} {'PLM states':11s} {'step (ms)':>10s} "
          f"{'x baseline':>10s} {'solver':>7s} {'peak (MiB)':>11s} {'x baseline':>10s}")
    for key in configs:
        system, precision, teacher = key
        median = statistics.median(times[key])
        base_key = ("baseline", precision, "cached")
        base = statistics.median(times[base_key])
        share = f"{100 * solver_share[key]:6.1f}%" if key in solver_share else f"{'-':>7s}"
        peak = f"{memory[key]:11.0f}" if key in memory else f"{'-':>11s}"
        mem_ratio = (f"{memory[key] / memory[base_key]:10.3f}"
                     if key in memory and memory.get(base_key) else f"{'-':>10s}")
        print(f"{system:9s} {precision:9s} {teacher if SYSTEMS[system] else '-':11s} "
              f"{median * 1e3:10.1f} {median / base:10.3f} {share} {peak} {mem_ratio}")
    print()
    for system, seconds in decode.items():
        print(f"decoding (encoder{'' if SYSTEMS[system] is None else ' + adapter + fusion'}"
              f" + CTC argmax, fp32) {system:9s} {seconds * 1e3:8.1f} ms   "
              f"x baseline {seconds / decode['baseline']:.3f}")
    if skipped:
        print(f"grad-scaler steps skipped for inf/nan gradients: {skipped}")


if __name__ == "__main__":
    main()
