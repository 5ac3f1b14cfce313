"""The base of every error a user can cause with a config, a data file or a model folder.

Entry points print such an error's message and exit non-zero; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem in the user's input; the message names the file, key or rule."""
