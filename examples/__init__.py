"""Example plugins: ``python -m examples.weather_plugin``, ``python -m examples.network_plugin``."""
