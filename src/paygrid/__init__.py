"""paygrid: the back office of a payment team, one bounded context per package."""

__version__ = "0.1.0"
