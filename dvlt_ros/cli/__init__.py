"""The ``dvlt-ros`` command line: one module per subcommand (``demo``, ...)."""
