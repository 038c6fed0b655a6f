"""The error every user mistake raises: the CLI turns it into one message and exit status 2.

A :class:`UserError` means bad input (config, data, paths, model directories) and its message
says what and where (file, row, column, key, value: values cut to ~80 characters). Any other
exception escaping a command is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad config, data, path or model directory; the message names what and where."""
