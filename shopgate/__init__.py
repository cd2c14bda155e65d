"""shopgate: a service-discovery gateway in the Consul + HAProxy style."""

__version__ = "0.1.0"
