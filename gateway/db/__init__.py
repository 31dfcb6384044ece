"""The gateway's store: engines and migrations (:mod:`gateway.db.engines`), the mapped
schema (:mod:`gateway.db.schema`), sessions (:mod:`gateway.db.sessions`) and a Core-only
read path for listings (:mod:`gateway.db.reading`).

The package imports none of its modules, so that :mod:`gateway.db.reading` loads neither
the ORM nor the schema.
"""
