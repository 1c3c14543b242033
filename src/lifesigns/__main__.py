"""``python -m lifesigns``: the same as the ``lifesigns`` command."""

from lifesigns.cli import main

main()
