"""Registration of the plugin's classes into ESPnet's ASR task.

ESPnet 202511 has no plugin mechanism: ``espnet2.tasks.asr`` keeps its choices in
plain dicts read when the parser is built. :func:`register` adds ours to them;
it must run in every process that parses arguments or builds a model, which is
what ``python -m espnet_gmot.launch`` and the ``espnet_gmot.bin`` entry points see to.
It also makes the checkpoints of ESPnet's trainer atomic
(:mod:`espnet_gmot.espnet.checkpoint`) and destroys a distributed worker's
process group before it exits (:mod:`espnet_gmot.espnet.distributed`).
"""

MODEL_NAME = "gmot"
FRONTEND_NAME = "fbank_pitch"


def register() -> None:
    """Add ``model: gmot`` and ``frontend: fbank_pitch`` to ``ASRTask``, make
    the trainer's checkpoint writes atomic and destroy a worker's process group
    at exit (idempotent)."""
    from espnet2.tasks import asr

    from espnet_gmot.espnet import checkpoint, distributed
    from espnet_gmot.espnet.frontend import FbankPitchFrontend
    from espnet_gmot.espnet.model import ESPnetGMOTModel

    asr.model_choices.classes[MODEL_NAME] = ESPnetGMOTModel
    asr.frontend_choices.classes[FRONTEND_NAME] = FbankPitchFrontend
    checkpoint.install()
    distributed.install()
