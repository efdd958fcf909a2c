"""Every console script of dvlt_core, one module each: ``dvlt-reconstruct`` (reconstruct),
``dvlt-export`` (export), ``dvlt-train`` (train) and ``dvlt-eval`` (evaluate). Entry points sit
on top of the layers (docs/layout.md): nothing else in dvlt_core imports them."""
