"""Find the extension modules of a package: one module per service, per technique family, per
detector family. Listing the package (instead of a table of names) is what makes adding one of
them adding one module."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def package_modules(package: str, skip: frozenset[str] = frozenset()) -> list[ModuleType]:
    """The modules of ``package`` (imported, sorted by name), leaving out ``skip`` and the names
    that start with ``_`` (helpers private to the package)."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                   if not m.name.startswith("_") and m.name not in skip)
    return [importlib.import_module(f"{package}.{name}") for name in names]
