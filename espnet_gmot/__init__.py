"""espnet-gmot: optimal-transport knowledge transfer from a PLM to ESPnet CTC models.

``import espnet_gmot`` registers ``model: gmot`` and ``frontend: fbank_pitch``
in ESPnet's ASR task, in any order with ESPnet's imports, without importing
ESPnet itself (:mod:`espnet_gmot.plugin`).
"""

from espnet_gmot.plugin import install_hook as _install_hook

__version__ = "0.1.0"

_install_hook()
