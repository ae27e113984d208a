"""python -m query_service: run the query service (see README, Settings)."""

from query_service.server import main

main()
