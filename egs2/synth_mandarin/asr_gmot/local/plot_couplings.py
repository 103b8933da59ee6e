#!/usr/bin/env python3
"""Heat maps of the learned couplings for a few test utterances, like the papers' figures.

For every transfer system (``model: gmot``) it loads the trained model the way
ESPnet's decoder does, runs the encoder, the adapter and the OT branch with the
teacher's states of the reference transcript, and draws the coupling: frames
(time) across, tokens ``[CLS] ... [SEP]`` down. One PNG per utterance puts the
methods side by side: ``<out_dir>/<utt>.png`` (default ``couplings/``, next
to RESULTS.md). The models are those trained with ``--seed``.
"""

import argparse
import logging
import sys
from pathlib import Path

import kaldiio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from espnet_gmot.kaldi_data import read_text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import run_dir  # noqa: E402

CJK_FONTS = ("WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Droid Sans Fallback")
TITLES = {"otbert": "OT-BERT", "totcakt": "TOT-CAKT", "gmot": "GM-OT",
          "gmot_control": "GM-OT, untrained teacher",
          "gmot_relaxed": "GM-OT, relaxed frames", "hybrid_gmot": "GM-OT, hybrid"}


def cjk_font():
    # Matplotlib's font scan skips TrueType collections (.ttc), the form Debian
    # ships CJK fonts in: register those files explicitly.
    for path in font_manager.findSystemFonts(fontext="ttc"):
        try:
            font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError):
            continue
    available = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in available:
            return name
    logging.warning("no CJK font found (apt-get install fonts-wqy-zenhei): "
                    "tokens are labelled by position")
    return None


def load_model(exp_dir: Path):
    from espnet2.asr.espnet_model import ESPnetASRModel
    from espnet2.tasks.asr import ASRTask

    from espnet_gmot.espnet.registry import register

    register()
    model, _ = ASRTask.build_model_from_file(
        exp_dir / "config.yaml", exp_dir / "valid.cer_ctc.ave.pth", device="cpu"
    )
    return model.eval(), ESPnetASRModel.encode


@torch.no_grad()
def coupling(model, base_encode, feats: np.ndarray, transcript: str):
    speech = torch.from_numpy(feats)[None]
    lengths = torch.tensor([feats.shape[0]])
    acoustic, acoustic_lengths = base_encode(model, speech, lengths)
    adapted = model.transfer.adapt(acoustic)
    states, plm_lengths, _ = model.teacher.encode([transcript], torch.device("cpu"))
    out = model.transfer.transfer_losses(adapted, acoustic_lengths, states, plm_lengths)
    tokens = model.teacher.tokenizer.convert_ids_to_tokens(
        model.teacher.tokenizer(transcript)["input_ids"]
    )
    return out.plan[0].numpy(), tokens, {k: float(v) for k, v in out.stats.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", type=Path, default=Path("exp"))
    parser.add_argument("--systems", default="baseline otbert totcakt gmot")
    parser.add_argument("--seed", default="0", help="the seed whose models are drawn")
    parser.add_argument("--tag", default="", help="run.sh's --tag")
    parser.add_argument("--feats", type=Path, required=True, help="dump dir with feats.scp")
    parser.add_argument("--data", type=Path, required=True, help="data dir with text")
    parser.add_argument("--num_utts", type=int, default=3)
    parser.add_argument("--out_dir", type=Path, default=Path("couplings"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    systems = []
    for system in args.systems.split():
        config = yaml.safe_load((run_dir(args.exp, system, args.seed, args.tag) / "config.yaml").read_text())
        if config.get("model") == "gmot":
            systems.append(system)
    if not systems:
        logging.info("no transfer system among %s: nothing to plot", args.systems)
        return
    texts = read_text(args.data / "text")
    feats = kaldiio.load_scp(str(args.feats / "feats.scp"))
    utts = sorted(texts)[: args.num_utts]
    models = {s: load_model(run_dir(args.exp, s, args.seed, args.tag)) for s in systems}
    font = cjk_font()
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for utt in utts:
        fig, axes = plt.subplots(1, len(systems), figsize=(4.2 * len(systems), 3.6),
                                 squeeze=False)
        for ax, system in zip(axes[0], systems):
            plan, tokens, stats = coupling(*models[system], feats[utt], texts[utt])
            # Each token's row scaled to its own maximum, so narrow and wide rows both show.
            image = plan.T / plan.T.max(axis=1, keepdims=True)
            ax.imshow(image, aspect="auto", origin="upper", cmap="viridis", interpolation="nearest")
            ax.set_yticks(range(len(tokens)))
            ax.set_yticklabels(tokens if font else range(len(tokens)), fontsize=7,
                               **({"fontname": font} if font else {}))
            ax.set_xlabel("acoustic frame (40 ms)")
            ax.set_title(f"{TITLES.get(system, system)}: monotonicity "
                         f"{stats['ot_monotonicity']:.2f}", fontsize=9)
        fig.suptitle(f"{utt}  {texts[utt]}", fontsize=10, **({"fontname": font} if font else {}))
        fig.tight_layout()
        path = out_dir / f"{utt}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        logging.info("wrote %s", path)


if __name__ == "__main__":
    main()
