"""One module per adaptation method; importing this package registers every one of them.

A new method is one file here whose layer class carries ``@register("name")``.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
