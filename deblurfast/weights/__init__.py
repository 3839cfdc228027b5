"""The bundled default model: weights (safetensors), model card (default.json) and the demo image."""
