"""``tvc server``: a registry shared over HTTP, with tokens (see :mod:`tvc.server.app` and
:mod:`tvc.server.tokens`). FastAPI and uvicorn come with the ``server`` extra."""
