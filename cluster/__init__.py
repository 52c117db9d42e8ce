"""Configuration, topology and the driver: builds the Ray actors from one validated YAML file."""
