"""Fixed point: the number formats (formats.py) and the integer network the C export computes (integer.py)."""
