"""The transfer branch as plain torch modules (no ESPnet import)."""

from espnet_gmot.transfer.module import OTKnowledgeTransfer, TransferLosses
from espnet_gmot.transfer.plm import PLMTeacher, token_ids_to_text

__all__ = ["OTKnowledgeTransfer", "PLMTeacher", "TransferLosses", "token_ids_to_text"]
