"""Building the files: cards, weights, PyTorch modules, export wrappers, conversion (litert-torch) and quantized
variants (ai-edge-quantizer). Needs the `[convert]` extra (torch, litert-torch, videoseal, PyYAML)."""
