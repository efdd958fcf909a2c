"""Command-line developer tools (``python -m dvlt_core.tools.<name>``)."""
