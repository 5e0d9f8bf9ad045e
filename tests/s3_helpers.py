"""The test session's S3 server (tests/conftest.py ``_seaweed``): its bucket and its keys.

Here, not in conftest.py: tests import them, and ``conftest`` names a different module in
each test directory."""

S3_KEYS = {"AWS_ACCESS_KEY_ID": "test-ak", "AWS_SECRET_ACCESS_KEY": "test-sk-0123456789"}
S3_BUCKET = "tvc-test"
