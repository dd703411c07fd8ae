"""Built-in conditionings plugins."""
