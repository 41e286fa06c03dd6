"""OFA, native: an OFA-Sys checkpoint folder (``config.json``, ``vocab.json`` + ``merges.txt``, weights) loads
as a transformers ``PreTrainedModel`` with ``GenerationMixin`` and captions images for the ``ofa`` predictor.

``config`` (the checkpoint's settings), ``model`` (the network), ``load`` (folder or hub id -> checked
weights, tokenizer, pixels, decoding), ``tiny`` (the offline random twin), ``predictor`` (the registry's
class) and ``reference`` (modelscope's implementation loaded for parity checks and the benchmark).
"""
