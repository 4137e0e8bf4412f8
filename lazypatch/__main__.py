"""``python -m lazypatch`` runs the same command line as ``lazypatch``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
