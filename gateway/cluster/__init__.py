"""Running many gateway processes as one: leader election and policy change push."""
