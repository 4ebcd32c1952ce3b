"""Built-in adapters, one module per server. Installed as ``anyserve.adapters``."""
