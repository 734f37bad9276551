"""Limits on what one prediction request may name, shared by the request schemas and the
multipart checks. Plain constants: the torch-free client imports the schemas."""

MAX_TASKS = 32  # tasks per prediction request (JSON 'tasks' and multipart 'task' alike)
MAX_TASK_NAME_CHARS = 97  # 'namespace/task': 32 + 1 + 64 (adapters.store.base.MAX_NAME_CHARS)
