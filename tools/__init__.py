"""Project checks anyone can run (python tools/<name>.py)."""
