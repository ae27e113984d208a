"""The `mysocial` command-line client: people trying the system, and load generation.

`cli.py` parses the command line and dispatches; `session.py` resolves who acts and
where (the `Client`, its token, local errors); `commands_write.py` and
`commands_read.py` call the command and query services over gRPC, `watches.py` follows
their streams; `views.py` renders the responses (tables and live views, no I/O);
`loadgen.py` drives launch-day traffic. None of it runs inside a service, so it lives
outside the shared `mysocial` package.
"""
