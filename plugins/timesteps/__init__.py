"""Built-in timesteps plugins."""
