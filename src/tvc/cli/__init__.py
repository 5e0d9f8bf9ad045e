"""The ``tvc`` command line: one module per command group, all thin over :class:`tvc.Registry`."""
