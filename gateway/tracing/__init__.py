"""Leak tracing: which recipients received the rows of a leaked file, and which one leaked it.

Three layers (docs/tracing.md): a keyed index of every delivered row (:mod:`.index`), a keyed
per-recipient mark in the values of fields that tolerate one (:mod:`.marks`), and optional
per-recipient canary rows (:mod:`.canaries`). :mod:`.delivery` applies them to a query
answer; :class:`~gateway.tracing.engine.LeakTracer` reads them back from a leaked table.
"""
