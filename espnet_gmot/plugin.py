"""How the plugin gets into ESPnet: ``import espnet_gmot`` is enough.

ESPnet 202511 and 202611 have no plugin mechanism: ``espnet2.tasks.asr`` keeps
its choices in plain dicts, and ``Speech2Text``, ``espnet2.bin.*`` and
ESPnet-EZ build ``model: gmot`` from them. ``import espnet_gmot`` (the
package's ``__init__`` calls :func:`install_hook`) installs an import hook
that calls :func:`espnet_gmot.espnet.registry.register` the moment
``espnet2.tasks.asr`` is imported, or at once when it is imported already.
So the order of ``import espnet_gmot`` and ESPnet's imports does not matter;
it only has to come before a ``model: gmot`` model is built or a config is
parsed. The hook itself imports no ESPnet: the ``ot`` and ``transfer``
layers stay free of it.

A process that never imports the plugin gets ESPnet's own
``ValueError: --model must be one of (...): --model gmot``; ESPnet cannot be
made to say more without the plugin loaded (README, "Sharing a model").
"""

import importlib.abc
import importlib.machinery
import sys

_HOOKED_MODULE = "espnet2.tasks.asr"


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps the real loader of ``espnet2.tasks.asr``; registers after it ran."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        from espnet_gmot.espnet.registry import register

        register()

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks
        return getattr(self._inner, name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _HOOKED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install_hook() -> None:
    """Register now if ESPnet's ASR task is imported already, else on its import."""
    if _HOOKED_MODULE in sys.modules:
        from espnet_gmot.espnet.registry import register

        register()
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
