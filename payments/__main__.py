"""``python -m payments``: the same as ``reckon payments``."""

from payments.cli import main

if __name__ == "__main__":  # not when a pricing process imports the parent's __main__
    main()
