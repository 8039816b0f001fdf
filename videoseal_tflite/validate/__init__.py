"""Validation: static inspection of .tflite files, load checks in a subprocess, reports."""
