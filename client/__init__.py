"""The `mysocial` command-line client: people trying the system, and load generation.

`cli.py` parses commands and calls the services over gRPC, `views.py` renders the
responses (tables and live views, no I/O), `loadgen.py` drives launch-day traffic.
None of it runs inside a service, so it lives outside the shared `mysocial` package.
"""
