"""Loading a packed model (asr.sh stage 14's zip, or that zip unpacked).

``Speech2Text.from_pretrained`` hands its ``model_tag`` to espnet_model_zoo's
``ModelDownloader``, which unpacks a local zip (or a Hugging Face repo) but
not a local directory. :func:`download_and_unpack` takes both, and the greedy
decoder's ``--model_tag`` and :func:`from_pretrained` go through it.
"""

from pathlib import Path
from typing import Any, Dict, Union


def download_and_unpack(model_tag: Union[str, Path]) -> Dict[str, str]:
    """``{"asr_train_config": ..., "asr_model_file": ..., ...}`` of a packed model.

    ``model_tag``: a pack (zip or tar, as ``espnet2.bin.pack`` writes it), the
    directory it was unpacked to (as asr.sh's Hugging Face stage uploads it),
    or a name espnet_model_zoo resolves (its table, Hugging Face).
    """
    try:
        from espnet_model_zoo.downloader import ModelDownloader
    except ImportError as err:
        raise ImportError(
            f"model_tag {str(model_tag)!r}: loading a packed model needs espnet_model_zoo, "
            "as ESPnet's from_pretrained does: pip install espnet_model_zoo"
        ) from err
    path = Path(model_tag)
    if path.is_dir():
        if not (path / "meta.yaml").is_file():
            raise FileNotFoundError(
                f"model_tag {str(model_tag)!r}: the directory has no meta.yaml, so it is no "
                "unpacked ESPnet pack; give the zip of asr.sh's stage 14 "
                "(espnet2.bin.pack) or the directory it was unzipped to"
            )
        # A Hugging Face repo of an ESPnet model is exactly an unpacked pack:
        # espnet_model_zoo's own reader resolves its relative paths (once).
        return ModelDownloader._unpack_cache_dir_for_huggingfase(str(path.resolve()))
    return ModelDownloader().download_and_unpack(str(model_tag))


def from_pretrained(model_tag: Union[str, Path], **kwargs: Any):
    """``Speech2Text.from_pretrained`` that also takes an unpacked directory,
    with the plugin registered."""
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_gmot.espnet.registry import register

    register()
    return Speech2Text(**{**download_and_unpack(model_tag), **kwargs})
