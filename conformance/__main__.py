"""``python -m conformance SERVICE``: the same as ``reckon conformance SERVICE``."""

from conformance.cli import main

if __name__ == "__main__":
    main()
