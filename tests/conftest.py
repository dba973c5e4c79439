"""Shared fixtures. The real-services stack is in tests/integration/conftest.py."""

import os

# Weights ship inside packages; nothing may be fetched from a hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
