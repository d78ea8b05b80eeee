"""The `spikedeploy` command line: thin click wrappers over the Python API."""
