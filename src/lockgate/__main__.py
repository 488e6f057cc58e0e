"""``python -m lockgate`` == ``lockgate``."""

from lockgate.cli import main

main()
