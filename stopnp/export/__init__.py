"""Exporters: C99 for microcontrollers (c.py, fixed point or float, optional on-device STOP) and NIR (nir.py)."""
