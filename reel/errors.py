"""Errors a person can cause and fix. The CLI prints them as one line and exits with status 2."""


class ReelError(Exception):
    """Bad config, missing file, bad video, wrong shapes: a one-line message naming the key or file."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
