"""Operations: the ``inferq-ops`` CLI that runs the whole stack locally, and its helpers."""
