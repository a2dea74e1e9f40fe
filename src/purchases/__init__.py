"""purchases: a customer-purchases medallion pipeline (CSV -> Bronze -> Silver -> Gold -> SQL)."""

__version__ = "0.1.0"
