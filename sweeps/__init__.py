"""The sweep engine: specs, planning, corpus and tokenizer, the fused trainer, the worker.

Importing this package does not import torch: the API must start without touching CUDA.
"""
