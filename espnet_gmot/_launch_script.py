"""The ``__main__`` of spawned workers of ``python -m espnet_gmot.launch script.py``.

multiprocessing's ``spawn`` (and forkserver) start a worker by re-importing the
parent's ``__main__``: by its module name when it has one, else by running its
file. In script mode :mod:`espnet_gmot.launch` gives the script's ``__main__``
this module's name, so a worker imports this module, which installs the
registration hook and then runs the script as ``__mp_main__`` (as Python does
for a plain ``python script.py``), making the script's functions picklable.
"""

import os
import runpy

from espnet_gmot.launch import SCRIPT_ENV  # importing it installs the hook

if __name__ == "__mp_main__" and os.environ.get(SCRIPT_ENV):
    globals().update(runpy.run_path(os.environ[SCRIPT_ENV], run_name="__mp_main__"))
