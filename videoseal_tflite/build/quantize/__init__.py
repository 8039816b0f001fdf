"""FLOAT32 .tflite -> quantized variants (ai-edge-quantizer recipes), repaired until they load and run."""
