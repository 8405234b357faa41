"""``python -m relshard``: the ``relshard`` command."""

from relshard.cli import main

if __name__ == "__main__":
    main()
