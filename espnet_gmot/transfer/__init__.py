"""The transfer branch as plain torch modules (no ESPnet import).

The teacher reads plain text; turning ESPnet token ids into text is the ESPnet
glue's job (``espnet_gmot.espnet.tokens``).
"""

from espnet_gmot.transfer.module import OTKnowledgeTransfer, TransferLosses
from espnet_gmot.transfer.plm import PLMTeacher

__all__ = ["OTKnowledgeTransfer", "PLMTeacher", "TransferLosses"]
