"""Shared test helpers, imported as ``support.<module>`` (``tests/`` is on ``sys.path`` through
``tests/conftest.py``): adapter builders (``factories``, ``token_factories``,
``top_layers_helpers``, ``training_helpers``), the real-server harness (``server``,
``http_helpers``, ``replica_helpers``), the S3 server (``s3``), the store contract's fixtures
(``store_fixtures``), crash and fuzz harnesses (``crash_worker``, ``crash_http``, ``fuzz_http``)
and process memory (``proc_mem``). The benches import the same modules."""
