"""``python -m gradkit``: the ``gradkit`` command."""

from gradkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
