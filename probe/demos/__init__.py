"""Built-in models with planted triggers, trained on first use and cached.

``text`` is the demo chat model (and its balanced twin), ``vision`` the demo VLM, ``training``
the small fine-tuning loop they share, ``registry`` finds them by name (``--model demo``).
"""
