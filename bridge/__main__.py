"""`python -m bridge`: the `realtime-bridge` command."""

from bridge.cli import main

main()
