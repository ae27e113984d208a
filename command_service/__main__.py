"""python -m command_service: run the command service (see README, Settings)."""

from command_service.server import main

main()
