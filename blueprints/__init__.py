"""Blueprints: the only code that imports ``azure.functions``. Each parses its trigger's input,
calls a plain handler, and turns the result into a response."""
