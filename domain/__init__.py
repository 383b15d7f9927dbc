"""Domain functions: the rules of the product, over SQLAlchemy Core.

They take the connection as a keyword argument and never commit: the resolver
that called them owns the transaction (see STYLE.md, rule 5).
"""
