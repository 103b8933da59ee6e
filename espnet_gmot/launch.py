"""A ``python3`` that knows the espnet-gmot plugin: the prefix for asr.sh's ``--python``.

Usage, like the interpreter itself::

    python3 -m espnet_gmot.launch -m espnet2.bin.asr_train --config conf/train_asr_gmot.yaml ...
    python3 -m espnet_gmot.launch pyscripts/utils/some_script.py ...
    ./asr.sh --python "python3 -m espnet_gmot.launch" ...
    ./asr.sh --python "python3 -m espnet_gmot.launch --asr_inference espnet_gmot.bin.asr_inference_ctc_greedy" ...

``--asr_inference MODULE`` runs ``MODULE`` wherever ``espnet2.bin.asr_inference``
is asked for: asr.sh's stage 12 then decodes with the batched greedy CTC decoder,
which takes the same arguments and writes the same files.
``espnet2.bin.pack`` (asr.sh's stage 14) runs as :mod:`espnet_gmot.bin.pack`:
the same archive, without the PLM teacher's local path, with the plugin note.

It installs an import hook that registers ``model: gmot`` and
``frontend: fbank_pitch`` the moment ``espnet2.tasks.asr`` is imported (the
many small Python steps of asr.sh that never import it pay nothing), then runs
the target. Workers that ESPnet (or a script) starts with multiprocessing's
``spawn`` re-import ``__main__``: with ``-m`` and ``-c`` this module stays
``__main__``; a script runs in a ``__main__`` that workers re-import through
:mod:`espnet_gmot._launch_script`, which installs the hook before re-running
the script as ``__mp_main__``. asr.sh's own sub-commands (``espnet2.bin.launch``
workers, decoding jobs) are started with the same ``--python`` prefix.
"""

import runpy
import sys

from espnet_gmot.plugin import install_hook

# The script that spawned workers re-run (see espnet_gmot._launch_script).
SCRIPT_ENV = "ESPNET_GMOT_LAUNCH_SCRIPT"
_ESPNET_INFERENCE = "espnet2.bin.asr_inference"
# asr.sh stage 14: the pack without the PLM's local path, with the plugin note.
_ESPNET_PACK, _PLUGIN_PACK = "espnet2.bin.pack", "espnet_gmot.bin.pack"
_USAGE = ("usage: python3 -m espnet_gmot.launch [--asr_inference module] "
          "(-m module | -c code | script.py) [args ...]")


# At import, not only under __main__: spawned workers import this module.
install_hook()


def _run_script(argv) -> None:
    """``python script.py args``, with a ``__main__`` that spawned workers re-import.

    ``runpy.run_path`` would make the script's own module ``__main__``, which
    spawned workers re-run as a file without this hook. Here ``__main__`` is a
    fresh module named, for multiprocessing, :mod:`espnet_gmot._launch_script`:
    workers import that (hook first), and it runs the script again as
    ``__mp_main__``.
    """
    import importlib.util
    import os
    import types

    path = os.path.abspath(argv[0])
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as err:
        sys.exit(f"espnet_gmot.launch: can't open file {argv[0]!r}: {err.strerror}")
    os.environ[SCRIPT_ENV] = path
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(path)  # as the interpreter does for a script
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__spec__ = importlib.util.find_spec("espnet_gmot._launch_script")
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    exec(compile(source, path, "exec"), module.__dict__)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    asr_inference = _ESPNET_INFERENCE
    if argv and argv[0] == "--asr_inference":
        if len(argv) < 2:
            sys.exit(f"espnet_gmot.launch: --asr_inference needs a module name\n{_USAGE}")
        asr_inference, argv = argv[1], argv[2:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, file=sys.stderr if not argv else sys.stdout)
        sys.exit(2 if not argv else 0)
    if argv[0] == "-m":
        if len(argv) < 2:
            sys.exit(_USAGE)
        module, args = argv[1], argv[2:]
        if module == _ESPNET_INFERENCE:
            module = asr_inference
        elif module == _ESPNET_PACK:
            module = _PLUGIN_PACK
        sys.argv = [module, *args]
        if module == "espnet2.bin.asr_train":
            from espnet_gmot.espnet.plm_cache import check_plm_cache_covers_data

            check_plm_cache_covers_data(args)
        # alter_sys=False keeps this module as __main__ for spawned workers.
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    elif argv[0] == "-c":
        if len(argv) < 2:
            sys.exit(_USAGE)
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    elif argv[0].startswith("-"):
        sys.exit(f"espnet_gmot.launch: unsupported interpreter option {argv[0]!r}\n{_USAGE}")
    else:
        _run_script(argv)


if __name__ == "__main__":
    main()
