"""Developer and command-line tools that are not part of the host (`python -m native_host.tools.X`)."""
