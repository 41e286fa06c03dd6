"""Prompt bank and FAISS index: read, normalise, deduplicate, embed (values + keys), index, query.

``python -m index.build`` builds a bank folder; ``python -m index.query`` searches one;
:func:`promptblend.bank.load_bank` opens one for the ``knn`` predictor.
"""
