"""emailrouter: routes contact-centre customer email the way the work instruction says."""

__version__ = "0.1.0"
