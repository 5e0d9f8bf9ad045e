"""Alembic environment: tvc always migrates programmatically, on a connection it hands over."""

from alembic import context

from tvc.repo import schema  # noqa: F401 - registers the repo tables on the metadata
from tvc.store.index import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
)
with context.begin_transaction():
    context.run_migrations()
