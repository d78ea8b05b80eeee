"""spikedeploy: deploy spiking neural networks onto neuromorphic hardware."""
__version__ = "0.1.0"
