"""``python -m accounting.cli``: the same as ``reckon``."""

from accounting.cli import main

if __name__ == "__main__":  # not when a pricing process imports the parent's __main__
    main()
