"""Vigil's command line and technician tools."""


class ToolError(Exception):
    """A problem the user can fix; the CLI prints it and exits non-zero."""
