"""The local target: KServe model servers as local processes on 127.0.0.1, no cluster needed.

This package's modules are also imported inside the predictor's own virtual environment
(``server``, ``artifacts``), so this file imports nothing.
"""
