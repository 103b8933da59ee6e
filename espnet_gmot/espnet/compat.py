"""What ESPnet moved between releases, resolved in one place.

ESPnet 202611 moved its legacy ``espnet`` package (the ``espnet.nets`` and
``espnet.utils`` modules espnet2 is built on) to ``espnet2.legacy``; 202511 and
earlier have it at the top level. Every module of this package imports such
names from here, so no other file knows which ESPnet it runs on (a test
enforces it). Which place is used follows from whether ``espnet2.legacy``
exists, so a name missing from it fails loudly instead of falling back.
"""

import importlib.util

LEGACY_PACKAGE = (
    "espnet2.legacy" if importlib.util.find_spec("espnet2.legacy") is not None else "espnet"
)

if LEGACY_PACKAGE == "espnet2.legacy":  # ESPnet 202611 and later
    from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask, pad_list
    from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    from espnet2.legacy.utils.cli_utils import get_commandline_args
else:  # ESPnet 202511 and earlier
    from espnet.nets.pytorch_backend.nets_utils import make_pad_mask, pad_list
    from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    from espnet.utils.cli_utils import get_commandline_args

__all__ = ["LEGACY_PACKAGE", "TooShortUttError", "get_commandline_args", "make_pad_mask", "pad_list"]
