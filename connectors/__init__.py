"""Source adapters: the only code that talks to providers' databases and files.

``SqlConnector`` reaches a table of a SQL database, ``CsvConnector`` a CSV file; both
implement :class:`Connector`. ``connectors.synthetic`` makes fake source data.
"""

from connectors.base import (
    AggregateQuery,
    Condition,
    Connector,
    ConnectorError,
    FieldType,
    Measure,
    Operator,
    Row,
    RowQuery,
    Value,
    coerce_value,
)
from connectors.csv_file import CsvConnector
from connectors.sql import SqlConnector

__all__ = [
    "AggregateQuery",
    "Condition",
    "Connector",
    "ConnectorError",
    "CsvConnector",
    "FieldType",
    "Measure",
    "Operator",
    "Row",
    "RowQuery",
    "SqlConnector",
    "Value",
    "coerce_value",
]
