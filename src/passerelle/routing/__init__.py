"""Choosing a model per request: the learned router's features, model, artefact and choice.

Pure computation over numpy arrays; nothing here knows the pipeline, the configuration or HTTP,
so the gateway, ``passerelle router train`` and the benchmarks run the very same code.
"""
