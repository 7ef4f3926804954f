"""fairseq ``--user-dir`` shim: fairseq imports this folder under its own name, so it only
imports the one module that holds every registration (imported once, whatever the path)."""

try:
    import sequential_rationales_integrations.fairseq  # noqa: F401
except ModuleNotFoundError as error:  # package not installed: use this checkout
    if error.name != "sequential_rationales_integrations":
        raise
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))
    import sequential_rationales_integrations.fairseq  # noqa: F401
