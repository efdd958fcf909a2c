"""Command line tools of dvlt_core."""
