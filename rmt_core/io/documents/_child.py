"""Entry point of the reading process started by sandbox.extract_isolated (run as a script).

It imports only the document readers: ``rmt_core`` is registered as a bare package first, so
its ``__init__`` (which loads torch, several seconds) does not run; the readers need only the
standard library, pypdf, lxml and charset-normalizer.
"""
import sys
import types
from pathlib import Path

if __name__ == "__main__":
    package = types.ModuleType("rmt_core")
    package.__path__ = [str(Path(__file__).resolve().parents[2])]
    sys.modules["rmt_core"] = package
    from rmt_core.io.documents.sandbox import child_main

    sys.exit(child_main())
