"""Tiny ASR data and a tiny Hugging Face BERT, built locally for the tests.

Speech is synthetic: every character is a short chord of its own frequencies,
so a small CTC model can learn it in seconds; no download, no apt package.
The BERT is random-initialised and saved with ``save_pretrained``, so the
project loads it through the same ``from_pretrained`` path as
``bert-base-chinese``.
"""

import hashlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile

from espnet_gmot.kaldi_data import read_kaldi_map, utt2spk_to_spk2utt, write_kaldi_map

SAMPLE_RATE = 16000
CHAR_SECONDS = 0.12
SENTENCES = [
    "他是老师", "她是学生", "我们去学校", "今天天气很好", "他们在北京",
    "你好世界", "我喜欢学习", "老师在学校", "学生去北京", "今天我们很好",
    "他喜欢天气", "她在学习", "你们是学生", "世界很好", "我是老师",
    "我们在学习", "他去学校", "她们喜欢北京", "你在北京", "今天很好",
]


def char_waveform(char: str, rng: np.random.Generator) -> np.ndarray:
    """A chord whose three frequencies are derived from the character."""
    digest = hashlib.md5(char.encode("utf-8")).digest()
    freqs = [200 + 40 * (digest[k] % 50) for k in range(3)]
    t = np.arange(int(CHAR_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 3
    envelope = np.hanning(t.size)
    return 0.3 * wave * envelope + 0.003 * rng.standard_normal(t.size)


def write_split(root: Path, name: str, sentences: List[str], seed: int) -> Path:
    """Kaldi-style data dir ``root/name`` with wav.scp, text, utt2spk, spk2utt."""
    rng = np.random.default_rng(seed)
    data_dir = root / "data" / name
    wav_dir = root / "wav" / name
    data_dir.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_scp: Dict[str, str] = {}
    text: Dict[str, str] = {}
    utt2spk: Dict[str, str] = {}
    for k, sentence in enumerate(sentences):
        spk = f"spk{k % 2}"
        utt = f"{spk}-{name}{k:03d}"
        silence = np.zeros(int(0.05 * SAMPLE_RATE))
        wave = np.concatenate([silence] + [char_waveform(c, rng) for c in sentence] + [silence])
        path = wav_dir / f"{utt}.wav"
        soundfile.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        wav_scp[utt], text[utt], utt2spk[utt] = str(path), sentence, spk
    # Kaldi data directories are sorted by key (utils/validate_data_dir.sh).
    for fname, entries in (("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk)):
        write_kaldi_map(data_dir / fname, sorted(entries.items()))
    spk2utt = utt2spk_to_spk2utt(read_kaldi_map(data_dir / "utt2spk"))
    write_kaldi_map(data_dir / "spk2utt", sorted(spk2utt.items()))
    return data_dir


def write_token_list(path: Path, sentences: List[str]) -> Path:
    """ESPnet char token list: <blank>, <unk>, chars by frequency, <sos/eos>."""
    counts: Dict[str, int] = {}
    for sentence in sentences:
        for char in sentence:
            counts[char] = counts.get(char, 0) + 1
    chars = sorted(counts, key=lambda c: (-counts[c], c))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["<blank>", "<unk>", *chars, "<sos/eos>"]) + "\n", encoding="utf-8")
    return path


def make_tiny_corpus(root: Path) -> Dict[str, Path]:
    """Train (16 utts) / valid (4 utts) dirs and a token list under ``root``."""
    root = Path(root)
    train = write_split(root, "train", SENTENCES[:16], seed=0)
    valid = write_split(root, "valid", SENTENCES[16:], seed=1)
    tokens = write_token_list(root / "token_list" / "tokens.txt", SENTENCES)
    return {"train": train, "valid": valid, "token_list": tokens}


def make_tiny_bert(path: Path, hidden_size: int = 32, extra_chars: str = "") -> Path:
    """A 2-layer character BERT saved in Hugging Face format at ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = sorted(set("".join(SENTENCES)) | set(extra_chars))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(path / "vocab.txt"), do_lower_case=False)
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path


TINY_GMOT_CONF = Path(__file__).parents[1] / "espnet" / "conf" / "tiny_gmot.yaml"

# Sections that turn tiny_gmot.yaml (CTC-only Conformer) into the other ESPnet
# ASR setups model: gmot must accept; values update the sections of that name.
TINY_VARIANTS = {
    "ctc_conformer": {},
    # hybrid CTC/attention, ESPnet's AISHELL-1 weights (ctc_weight 0.3)
    "hybrid_conformer": {
        "decoder": "transformer",
        "decoder_conf": {
            "attention_heads": 2, "linear_units": 64, "num_blocks": 1, "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0, "self_attention_dropout_rate": 0.0,
            "src_attention_dropout_rate": 0.0,
        },
        "model_conf": {"ctc_weight": 0.3},
    },
    # intermediate CTC after the first of two Conformer blocks
    "interctc_conformer": {
        "encoder_conf": {"interctc_layer_idx": [1]},
        "model_conf": {"interctc_weight": 0.5},
    },
    "ctc_e_branchformer": {
        "encoder": "e_branchformer",
        "encoder_conf": {
            "output_size": 32, "attention_heads": 2, "attention_layer_type": "rel_selfattn",
            "pos_enc_layer_type": "rel_pos", "rel_pos_type": "latest",
            "cgmlp_linear_units": 64, "cgmlp_conv_kernel": 5, "use_linear_after_conv": False,
            "gate_activation": "identity", "num_blocks": 2, "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
            "input_layer": "conv2d", "linear_units": 64, "positionwise_layer_type": "linear",
            "use_ffn": True, "macaron_ffn": True, "merge_conv_kernel": 5,
        },
    },
}


def tiny_gmot_config(bert: Path, variant: str = "ctc_conformer", max_epoch: int = 2) -> dict:
    """``tiny_gmot.yaml`` as a dict, in one of :data:`TINY_VARIANTS`, teacher at ``bert``."""
    import yaml

    config = yaml.safe_load(TINY_GMOT_CONF.read_text())
    config["model_conf"]["plm_conf"]["name_or_path"] = str(bert)
    config["max_epoch"] = max_epoch
    changes = TINY_VARIANTS[variant]
    for key, value in changes.items():
        other_encoder = key == "encoder_conf" and "encoder" in changes  # its own keys
        if isinstance(value, dict) and key in config and not other_encoder:
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    if "decoder" in config:
        # ESPnet's convention for a model with an attention decoder.
        config["best_model_criterion"] = [["valid", "acc", "max"], ["valid", "loss", "min"]]
    return config


def write_tiny_gmot_config(path: Path, bert: Path, variant: str = "ctc_conformer",
                           max_epoch: int = 2) -> Path:
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(tiny_gmot_config(bert, variant, max_epoch), allow_unicode=True))
    return path


def tiny_gmot_config_text(bert: Path, max_epoch: int = 2) -> str:
    """``tiny_gmot.yaml`` with the teacher at ``bert`` and ``max_epoch`` epochs."""
    text = TINY_GMOT_CONF.read_text().replace("PLM_DIR", str(bert))
    return text.replace("max_epoch: 2", f"max_epoch: {max_epoch}")


def build_tiny_gmot(root: Path, token_list: Path, bert: Path, variant: str = "ctc_conformer",
                    **model_conf_changes):
    """``model: gmot`` from ``tiny_gmot.yaml`` (in ``variant``, see
    :data:`TINY_VARIANTS`) through ESPnet's ``ASRTask.build_model``; dict
    values update the ``model_conf`` section of the same name."""
    import torch
    import yaml
    from espnet2.tasks.asr import ASRTask

    from espnet_gmot.espnet.registry import register

    register()
    config = tiny_gmot_config(bert, variant)
    for key, value in model_conf_changes.items():
        if isinstance(value, dict):
            config["model_conf"].setdefault(key, {}).update(value)
        else:
            config["model_conf"][key] = value
    path = Path(root) / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(path), "--token_list", str(token_list),
         "--token_type", "char", "--output_dir", str(Path(root) / "out")]
    )
    torch.manual_seed(0)
    return ASRTask.build_model(args)


def sharpen_ctc(model_dir: Path, wav_scp: Path, model_file: str = "valid.loss.best.pth",
                output_file: str = "sharpened.pth") -> Path:
    """A trained tiny model (which after an epoch or two emits only blanks) with
    a random CTC output layer of large weights and a blank bias that makes the
    blank win 60% of the frames: peaked posteriors spelling tokens separated by
    blanks, as a trained CTC model's do. Returns the new model file."""
    import torch
    from espnet2.tasks.asr import ASRTask

    from espnet_gmot.espnet.registry import register

    register()
    model, _ = ASRTask.build_model_from_file(
        model_dir / "config.yaml", model_dir / model_file, "cpu")
    gen = torch.Generator().manual_seed(0)
    weight = 8 * torch.randn(model.ctc.ctc_lo.weight.shape, generator=gen)
    weight[0] = 0.0
    best_token_logits = []
    with torch.no_grad():
        for path in read_kaldi_map(wav_scp).values():
            wave, _ = soundfile.read(path, dtype="float32")
            speech = torch.from_numpy(wave)[None]
            encoded, _ = model.encode(speech, torch.tensor([speech.size(1)]))
            best_token_logits.append((encoded[0] @ weight[1:model.eos].T).max(-1).values)
    bias = torch.zeros(weight.size(0))
    bias[0] = torch.quantile(torch.cat(best_token_logits), 0.6)
    # <sos/eos> never wins a frame (ESPnet's decoders drop it: a model whose
    # frames it won would decode as blank)
    weight[model.eos], bias[model.eos] = 0.0, -1e4
    state = model.state_dict()
    state["ctc.ctc_lo.weight"], state["ctc.ctc_lo.bias"] = weight, bias
    torch.save(state, model_dir / output_file)
    return model_dir / output_file


def ctc_best_paths(model_dir: Path, model_file: str, wav_scp: Path, device: str = "cpu") -> Dict[str, tuple]:
    """``{utt: (text, tokens, token ids)}``, one utterance at a time through ESPnet's
    Speech2Text model loading, its encoder and its ``CTC.argmax`` on ``device``:
    the best path, repeats collapsed, blanks and ``<sos/eos>`` dropped."""
    from itertools import groupby

    import torch
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_gmot.espnet.registry import register

    register()
    speech2text = Speech2Text(model_dir / "config.yaml", model_dir / model_file,
                              beam_size=1, ctc_weight=1.0, device=device)
    model = speech2text.asr_model
    result = {}
    for key, path in read_kaldi_map(wav_scp).items():
        wave, _ = soundfile.read(path, dtype="float32")
        speech = torch.from_numpy(wave)[None].to(device)
        with torch.no_grad():
            encoded, _ = model.encode(speech, torch.tensor([speech.size(1)], device=device))
            ids = [k for k, _ in groupby(model.ctc.argmax(encoded)[0].tolist())]
        ids = [i for i in ids if i not in (0, model.eos)]
        tokens = speech2text.converter.ids2tokens(ids)
        result[key] = (speech2text.tokenizer.tokens2text(tokens), " ".join(tokens),
                       " ".join(map(str, ids)))
    return result
