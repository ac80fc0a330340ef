"""The `docker login` line shown with new credentials, by the CLI and the web console alike."""

from __future__ import annotations

import shlex


def docker_login_line(hostname: str, username: str) -> str:
    """The login command, quoted so that the `$` of a robot name survives any shell."""
    return f"docker login {shlex.quote(hostname)} -u {shlex.quote(username)} --password-stdin"


def single_quoted(text: str) -> str:
    """`text` as one single-quoted shell word, whatever it holds."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def docker_login_with_password(hostname: str, username: str, password: str) -> str:
    """The same line, fed the password on standard input, to paste as it is."""
    return f"echo {single_quoted(password)} | {docker_login_line(hostname, username)}"
